#pragma once
// `ferry-agent vm ...`: QEMU-compatible command-line flags (BRIEF §2) parsed
// into one description of the guest to run. Unknown or malformed flags are
// errors that name the flag, as QEMU's are.

#include "agent/block/block_devices.hpp"
#include "agent/transport/migration_tls.hpp"
#include "agent/transport/sockets.hpp"
#include "agent/vmm/guest_memory.hpp"

#include <caf/expected.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace ferry {

struct vm_config {
  std::string name;
  std::string uuid;
  uint64_t ram_size = 128u << 20; // QEMU's default -m
  uint32_t smp = 1;
  // -drive / -blockdev, in command-line order: the first one's sector 0 is
  // the boot sector (`drive` is its file).
  std::vector<block_device_spec> drives;
  std::string drive;
  memory_backend backend;
  std::vector<endpoint> qmp;
  enum class serial_kind { none, stdio, file } serial = serial_kind::none;
  std::string serial_path;
  std::optional<std::string> incoming;
  bool start_paused = false; // -S
  enum class accel_kind { kvm, none } accel = accel_kind::kvm;
  uint32_t dirty_ring_size = 0; // -accel kvm,dirty-ring-size=N (0 = bitmap)
  // -accel none: the dirtier; unset fields come from the boot image's
  // test-guest parameter block when there is one.
  std::optional<uint64_t> dirty_rate;
  std::optional<uint64_t> ws_start;
  std::optional<uint64_t> ws_pages;
  // -object tls-creds-x509 / authz-simple, for tls-creds and tls-authz.
  std::vector<tls_creds_object> tls_creds;
  std::vector<authz_object> authz;
  // -object x-ferry-colo,id=ID,fence-timeout=MS,output=MODE (Ferry's own): a COLO
  // primary whose secondary has been silent this long pauses its guest
  // until x-colo-lost-heartbeat says it runs on alone. 0: never (QEMU's
  // behaviour; a cluster's agents set it).
  uint64_t colo_fence_ms = 0;
  // output=compare|checkpoint: how a COLO primary commits its output.
  bool colo_compare = false;
};

// `args` are the words after "vm".
caf::expected<vm_config> parse_vm_args(const std::vector<std::string>& args);

// "unix:/path,server=on,wait=off" or "tcp:host:port,server=on,wait=off".
caf::expected<endpoint> parse_endpoint(const std::string& text);

} // namespace ferry
