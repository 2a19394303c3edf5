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

  // Dirty-rate measurement (calc-dirty-rate mode dirty-ring), alongside a
  // migration's tracking or without one: from measure_begin() on, every
  // distinct page each vCPU dirties is counted. measure_read() harvests and
  // returns the per-vCPU counts so far (index = vCPU) and the distinct pages
  // of all vCPUs together; measure_end() stops counting.
  caf::expected<void> measure_begin();
  struct measured {
    std::vector<uint64_t> per_vcpu;
    uint64_t total = 0;
  };
  caf::expected<measured> measure_read();
  void measure_end();

private:
  struct ring {
    kvm_dirty_gfn* entries;
    uint32_t count;
    uint32_t fetch = 0;
    dirty_bitmap seen{0};  // measuring: pages this vCPU dirtied
    uint64_t distinct = 0; // measuring: bits set in `seen`
  };
  caf::expected<void> harvest_locked();
  // KVM logs into the rings while a migration or a measurement wants it.
  caf::expected<void> update_logging_locked();

  kvm_vm& vm_;
  mutable std::mutex mtx_;
  std::vector<ring> rings_;
  dirty_bitmap pending_;
  uint64_t bad_entries_ = 0;
  bool active_ = false;    // a migration's start() .. stop()
  bool measuring_ = false; // measure_begin() .. measure_end()
  bool logging_ = false;
  dirty_bitmap measured_all_{0};
  uint64_t measured_total_ = 0;
};

} // namespace ferry
