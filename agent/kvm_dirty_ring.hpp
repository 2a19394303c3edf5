#pragma once
// KVM's per-vCPU dirty rings. Each vCPU publishes the pages it dirties into a
// ring shared with us; harvesting marks entries collected and
// KVM_RESET_DIRTY_RINGS write-protects those pages again. A vCPU whose ring
// fills up exits with KVM_EXIT_DIRTY_RING_FULL and calls harvest() itself.

#include "agent/dirty_tracker.hpp"
#include "agent/kvm_vm.hpp"

#include <mutex>

namespace ferry {

class kvm_dirty_ring final : public dirty_tracker {
public:
  explicit kvm_dirty_ring(kvm_vm& vm);

  // vCPUs register their mapped ring when they are created.
  void add_ring(kvm_dirty_gfn* entries, uint32_t count);

  // Collects every published entry into the pending set and resets the rings.
  caf::expected<void> harvest();

  caf::expected<void> start() override;
  void stop() override;
  caf::expected<void> sync(dirty_bitmap& out) override;
  std::string_view name() const override { return "kvm-dirty-ring"; }

  // Entries with a slot or offset outside guest RAM (never expected from a
  // sane kernel); counted rather than trusted.
  uint64_t bad_entries() const;

private:
  struct ring {
    kvm_dirty_gfn* entries;
    uint32_t count;
    uint32_t fetch = 0;
  };
  caf::expected<void> harvest_locked();

  kvm_vm& vm_;
  mutable std::mutex mtx_;
  std::vector<ring> rings_;
  dirty_bitmap pending_;
  uint64_t bad_entries_ = 0;
  bool active_ = false;
};

} // namespace ferry
