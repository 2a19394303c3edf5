#include "agent/daemon/guest_process.hpp"

#include "actors/identity_proof.hpp"
#include "agent/cli/qemu_opts.hpp"
#include "agent/cli/vm_config.hpp"
#include "agent/daemon/guest_record.hpp"
#include "common/error.hpp"
#include "common/spawn_attributes.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>

namespace ferry {

namespace {

constexpr uint64_t mib = uint64_t{1} << 20;

// glibc 2.36's <sys/pidfd.h> lacks C linkage for C++; the system calls are
// used directly.
int open_pidfd(pid_t pid) {
  return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0U));
}

caf::error invalid(const std::string& msg) {
  return make_ferry_error(errc::invalid_argument, msg);
}

// Guest and host names become path components and option values: only
// [A-Za-z0-9._-].
bool plain_name(const std::string& s) {
  return std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '-';
  });
}

} // namespace

std::string qmp_socket_path(const std::string& run_dir, const std::string& name) {
  return run_dir + "/" + name + ".qmp";
}

caf::expected<void> check_guest_spec(const guest_spec& spec) {
  const auto& n = spec.name;
  const bool name_ok = !n.empty() && n.size() <= 64 && n.front() != '.' && plain_name(n);
  if (!name_ok)
    return invalid("guest name '" + n + "' must be 1-64 characters of [A-Za-z0-9._-]");
  if (!plain_name(spec.migration_peer))
    return invalid("guest '" + n + "': migration peer '" + spec.migration_peer +
                   "' is not a host name");
  if (spec.memory == 0 || spec.memory % mib != 0)
    return invalid("guest '" + n + "': memory must be a positive multiple of 1 MiB");
  if (spec.accel != "kvm" && spec.accel != "none")
    return invalid("guest '" + n + "': accel must be 'kvm' or 'none'");
  // The one-guest parser is the authority on everything else.
  if (auto cfg = parse_vm_args(vm_arguments(spec, "/run", "/run/tls")); !cfg)
    return invalid("guest '" + n + "': " + describe(cfg.error()));
  return {};
}

std::vector<std::string> vm_arguments(const guest_spec& spec, const std::string& run_dir,
                                      const std::string& tls_dir) {
  std::vector<std::string> a{"-name", spec.name,
                             "-m",    std::to_string(spec.memory / mib) + "M",
                             "-smp",  std::to_string(spec.vcpus)};
  if (!spec.uuid.empty())
    a.insert(a.end(), {"-uuid", spec.uuid});
  // No format=: probed, so a qcow2 image can hold snapshots; node "disk0"
  // is what the orchestrator's snapshot operations name.
  if (!spec.drive.empty())
    a.insert(a.end(), {"-drive", "file=" + qemu_opt_escape(spec.drive) + ",node-name=disk0"});
  if (!spec.mem_path.empty())
    a.insert(a.end(), {"-object",
                       "memory-backend-file,id=ram0,size=" + std::to_string(spec.memory / mib) +
                         "M,mem-path=" + qemu_opt_escape(spec.mem_path) + ",share=on",
                       "-machine", "memory-backend=ram0"});
  std::string accel = spec.accel;
  if (spec.accel == "kvm" && spec.dirty_ring_size != 0)
    accel += ",dirty-ring-size=" + std::to_string(spec.dirty_ring_size);
  if (spec.accel == "none" && spec.dirty_rate != 0)
    accel += ",dirty-rate=" + std::to_string(spec.dirty_rate);
  a.insert(a.end(),
           {"-accel", accel, "-qmp",
            "unix:" + qemu_opt_escape(qmp_socket_path(run_dir, spec.name)) + ",server=on,wait=off",
            "-serial", "file:" + run_dir + "/" + spec.name + ".serial"});
  if (!tls_dir.empty()) {
    const std::string dir = qemu_opt_escape(tls_dir);
    a.insert(a.end(), {"-object",
                       std::string{"tls-creds-x509,id="} + migration_tls_in + ",dir=" + dir +
                         ",endpoint=server,verify-peer=on",
                       "-object",
                       std::string{"tls-creds-x509,id="} + migration_tls_out + ",dir=" + dir +
                         ",endpoint=client"});
    if (!spec.migration_peer.empty())
      a.insert(a.end(),
               {"-object", std::string{"authz-simple,id="} + migration_authz + ",identity=" +
                             qemu_opt_escape(identity::subject_dn("host", spec.migration_peer))});
  }
  a.insert(a.end(), {"-object",
                     "x-ferry-colo,id=ferry-colo,fence-timeout=" + std::to_string(colo_fence_ms)});
  if (spec.incoming)
    a.insert(a.end(), {"-incoming", "defer"});
  return a;
}

caf::expected<guest_process> guest_process::spawn(const std::string& exe, const guest_spec& spec,
                                                  const std::string& run_dir,
                                                  const std::string& tls_dir) {
  std::vector<std::string> args{exe, "vm"};
  for (auto& s : vm_arguments(spec, run_dir, tls_dir))
    args.push_back(std::move(s));
  std::vector<char*> argv;
  argv.reserve(args.size() + 1);
  for (auto& s : args)
    argv.push_back(s.data());
  argv.push_back(nullptr);
  const std::string log = run_dir + "/" + spec.name + ".log";
  unique_fd log_fd{::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640)};
  if (!log_fd)
    return make_system_error("open " + log);
  ::unlink(qmp_socket_path(run_dir, spec.name).c_str());
  // posix_spawn, not fork: glibc starts the child in this process's memory
  // (CLONE_VM|CLONE_VFORK) instead of copying the page tables of an agent
  // with many threads, whose copy-on-write faults and TLB shootdowns made
  // each guest start cost tens of milliseconds of CPU on a busy host.
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&fa, log_fd.get(), STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(&fa, log_fd.get(), STDERR_FILENO);
  // Nothing else of the agent's (control-plane sockets, other guests' QMP
  // connections) may live on in a guest: libraries do not all set CLOEXEC.
  posix_spawn_file_actions_addclosefrom_np(&fa, STDERR_FILENO + 1);
  // A session of its own: the guest outlives its agent (a restart or an
  // upgrade of ferry-agent never touches running guests) and a signal to
  // the agent's process group does not reach it.
  const spawn_attributes attr{POSIX_SPAWN_SETSID};
  pid_t pid = -1;
  const int rc = ::posix_spawn(&pid, exe.c_str(), &fa, attr.get(), argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) {
    errno = rc;
    return make_system_error("failed to start '" + exe + "'");
  }
  unique_fd pidfd{open_pidfd(pid)};
  if (!pidfd) {
    auto err = make_system_error("pidfd_open");
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    return err;
  }
  return guest_process{pid, std::move(pidfd)};
}

caf::expected<guest_process> guest_process::adopt(int pid, uint64_t start_time) {
  const auto before = process_start_time(pid);
  if (!before || *before != start_time)
    return make_ferry_error(errc::invalid_argument,
                            "process " + std::to_string(pid) + " is gone (or is another one now)");
  unique_fd pidfd{open_pidfd(pid)};
  if (!pidfd)
    return make_system_error("pidfd_open " + std::to_string(pid));
  // The pidfd names one process for good; the pid may have been reused
  // between the two looks.
  if (process_start_time(pid) != start_time)
    return make_ferry_error(errc::invalid_argument,
                            "process " + std::to_string(pid) + " ended while being adopted");
  return guest_process{pid, std::move(pidfd)};
}

std::string guest_log_tail(const std::string& run_dir, const std::string& name, size_t max_bytes) {
  unique_fd fd{::open((run_dir + "/" + name + ".log").c_str(), O_RDONLY | O_CLOEXEC)};
  struct stat st {};
  if (!fd || ::fstat(fd.get(), &st) != 0)
    return {};
  const auto size = static_cast<size_t>(st.st_size);
  const size_t from = size > max_bytes ? size - max_bytes : 0;
  std::string text(size - from, '\0');
  const auto n = ::pread(fd.get(), text.data(), text.size(), static_cast<off_t>(from));
  text.resize(n > 0 ? static_cast<size_t>(n) : 0);
  if (from > 0) // a cut first line says less than none
    text.erase(0, std::min(text.size(), text.find('\n') + 1));
  while (!text.empty() && (text.back() == '\n' || text.back() == ' '))
    text.pop_back();
  return text;
}

bool guest_process::wait_exit(std::chrono::milliseconds timeout) const {
  pollfd p{pidfd_.get(), POLLIN, 0};
  return ::poll(&p, 1, static_cast<int>(timeout.count())) > 0;
}

void guest_process::kill() const {
  ::syscall(SYS_pidfd_send_signal, pidfd_.get(), SIGKILL, nullptr, 0U);
}

bool guest_process::try_reap() {
  // The pidfd says when the process ended, whether it is this agent's child
  // or one adopted after a restart (init reaps those).
  if (!wait_exit(std::chrono::milliseconds(0)))
    return false;
  siginfo_t info{};
  // P_PIDFD would need Linux 5.4 headers' constant; a child's pid is ours
  // until reaped, so waiting on it is exact (ECHILD: not our child).
  (void) ::waitid(P_PID, static_cast<id_t>(pid_), &info, WEXITED | WNOHANG);
  return true;
}

} // namespace ferry
