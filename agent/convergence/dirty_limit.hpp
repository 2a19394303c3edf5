#pragma once
// The vCPU dirty limit (set-vcpu-dirty-limit, and the dirty-limit migration
// capability): each limited vCPU's dirty rate — distinct pages it dirtied
// per period, counted by KVM's dirty ring — is held near its quota by
// keeping the vCPU out of execution for part of every 100 ms slice. Once a
// period ("dirtylimit" thread) the running share of each limited vCPU is
// scaled by (80 % of quota) / measured rate — its square root near the
// target, between x1/10 and x2 a step — so the brake follows the guest's
// load without swinging.

#include "agent/vmm/guest.hpp"
#include "agent/vmm/kvm/kvm_dirty_ring.hpp"
#include "common/background_worker.hpp"

#include <mutex>
#include <optional>
#include <vector>

namespace ferry {

class vcpu_dirty_limit {
public:
  // `g` runs with KVM's dirty ring (g.dirty_ring() != nullptr).
  explicit vcpu_dirty_limit(guest& g);
  ~vcpu_dirty_limit(); // releases every vCPU
  vcpu_dirty_limit(const vcpu_dirty_limit&) = delete;
  vcpu_dirty_limit& operator=(const vcpu_dirty_limit&) = delete;

  // Quota in MiB/s for one vCPU or (nullopt) all; 0 lifts it.
  void set(std::optional<uint32_t> cpu, uint64_t mib_per_s);
  // How often rates are measured and the brake adjusted (1..1000 ms).
  void set_period(uint64_t ms);
  bool in_service() const;

  struct vcpu_figures {
    uint32_t index = 0;
    uint64_t limit = 0;   // MiB/s
    uint64_t current = 0; // MiB/s over the last period
  };
  std::vector<vcpu_figures> limited() const;
  // query-migrate's dirty-limit figures, in microseconds: the longest time
  // a vCPU is held per round of filling its dirty ring, and the time the
  // average vCPU takes to fill its ring at its current rate (0: no dirtying).
  uint64_t throttle_time_per_round_us() const;
  uint64_t ring_full_time_us() const;

private:
  struct vcpu_state {
    uint64_t limit = 0;   // bytes/s; 0 = not limited
    double share = 1.0;   // of each slice the vCPU may run
    uint64_t current = 0; // bytes/s
    bool held = false;
  };
  void run();
  void adjust(const kvm_dirty_ring::measured& m, double seconds);
  void release_all();

  guest& g_;
  kvm_dirty_ring& ring_;
  mutable std::mutex mtx_;
  std::vector<vcpu_state> vcpus_;
  uint64_t period_ms_ = 1000;
  background_worker worker_{mtx_}; // "dirtylimit"; last: stops first
};

} // namespace ferry
