#pragma once
// A daemon-mode guest runs as its own `ferry-agent vm` process, as libvirt
// runs one QEMU per guest: a guest that crashes cannot take the host agent
// or the other guests with it, and every one-guest feature (QMP, migration,
// TLS) is the same code. The process outlives the agent (its own session,
// no death signal; systemd's KillMode=process), as QEMU outlives libvirtd:
// a restarted agent adopts it again (guest_record).

#include "actors/guest_spec.hpp"
#include "common/unique_fd.hpp"

#include <caf/expected.hpp>

#include <chrono>
#include <string>
#include <vector>

namespace ferry {

// Checks a guest spec before anything is started: names are path components
// of the run directory, so they are restricted to [A-Za-z0-9._-].
caf::expected<void> check_guest_spec(const guest_spec& spec);

// The one-guest command line (after `ferry-agent vm`) for `spec`, with its
// QMP socket, serial file in `run_dir`; with `tls_dir` (a tls-creds-x509
// directory), the migration TLS objects too (migration_tls_in/out, and
// migration_authz admitting the spec's migration_peer).
std::vector<std::string> vm_arguments(const guest_spec& spec, const std::string& run_dir,
                                      const std::string& tls_dir = {});

// The end of a guest's log (RUN_DIR/NAME.log, its stdout and stderr): at most
// its last `max_bytes`, trimmed to whole lines — what to tell a caller whose
// guest did not start.
std::string guest_log_tail(const std::string& run_dir, const std::string& name,
                           size_t max_bytes = 1024);

class guest_process {
public:
  // Starts `exe vm <vm_arguments>`; stdout/stderr go to RUN_DIR/NAME.log.
  static caf::expected<guest_process> spawn(const std::string& exe, const guest_spec& spec,
                                            const std::string& run_dir,
                                            const std::string& tls_dir = {});

  // A guest process started by an earlier run of the agent, recognised by
  // its pid and start time.
  static caf::expected<guest_process> adopt(int pid, uint64_t start_time);

  int pid() const { return pid_; }
  int pidfd() const { return pidfd_.get(); }
  // True once the process has ended (it may not be reaped yet).
  bool wait_exit(std::chrono::milliseconds timeout) const;
  void kill() const;
  // Reaps the process if it has ended; true if it had.
  bool try_reap();

private:
  guest_process(int pid, unique_fd pidfd) : pid_(pid), pidfd_(std::move(pidfd)) {}
  int pid_ = 0;
  unique_fd pidfd_;
};

std::string qmp_socket_path(const std::string& run_dir, const std::string& name);

} // namespace ferry
