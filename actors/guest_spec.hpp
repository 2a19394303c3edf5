#pragma once
// What a host needs to run one guest: the daemon-mode equivalent of the
// one-guest command line (`ferry-agent vm -name ... -m ... -smp ...`). Plain
// data, serialisable so it crosses the control plane between actors.

#include <caf/meta/type_name.hpp>

#include <cstdint>
#include <string>

namespace ferry {

struct guest_spec {
  std::string name;
  std::string uuid;
  uint64_t memory = 0; // bytes, as -m
  uint32_t vcpus = 1;  // -smp
  // Boot image (-drive file=...,format=raw); must exist on the host.
  std::string drive;
  // RAM backing (-object memory-backend-file,mem-path=...); empty = anonymous.
  std::string mem_path;
  std::string accel = "kvm";    // "kvm" or "none"
  uint32_t dirty_ring_size = 0; // -accel kvm,dirty-ring-size=N
  // -accel none only: the synthetic guest's dirtying rate (pages/s).
  uint64_t dirty_rate = 0;
  // Evacuation order: higher goes first.
  int32_t priority = 0;
  // Created as a migration target (-incoming defer), not booted.
  bool incoming = false;
  // Incoming only: the host the migration comes from; its certificate is the
  // only one the guest's migration port admits (tls-authz).
  std::string migration_peer;
};

// The QOM ids of the migration TLS objects a daemon-mode guest carries:
// server credentials for an incoming migration, client credentials for an
// outgoing one, and the authz object naming migration_peer.
inline constexpr const char* migration_tls_in = "ferry-tls-in";
inline constexpr const char* migration_tls_out = "ferry-tls-out";
inline constexpr const char* migration_authz = "ferry-authz";
// A daemon-mode guest that becomes a COLO primary fences itself (pauses)
// once its secondary has been silent this long (-object x-ferry-colo); the
// orchestrator promotes a secondary only after its primary's host has been
// out of reach for longer (docs/orchestrator.md, "COLO pairs").
inline constexpr uint64_t colo_fence_ms = 3000;

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, guest_spec& x) {
  return f(caf::meta::type_name("ferry_guest_spec"), x.name, x.uuid, x.memory, x.vcpus, x.drive,
           x.mem_path, x.accel, x.dirty_ring_size, x.dirty_rate, x.priority, x.incoming,
           x.migration_peer);
}

// A guest as its host reports it.
struct guest_info {
  guest_spec spec;
  int32_t pid = 0;
  std::string qmp_socket;      // absolute path on the host
  uint16_t migration_port = 0; // reserved for an incoming guest, else 0
  bool alive = false;          // the guest's process is running
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, guest_info& x) {
  return f(caf::meta::type_name("ferry_guest_info"), x.spec, x.pid, x.qmp_socket, x.migration_port,
           x.alive);
}

struct host_capacity {
  std::string host;
  // Where other hosts reach this one's migration ports.
  std::string migration_address;
  uint64_t memory_total = 0; // bytes the host offers to guests
  uint64_t memory_used = 0;  // sum of its guests' memory
  uint32_t guests = 0;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, host_capacity& x) {
  return f(caf::meta::type_name("ferry_host_capacity"), x.host, x.migration_address, x.memory_total,
           x.memory_used, x.guests);
}

} // namespace ferry
