#pragma once
// KVM's per-slot dirty bitmap with manual protection: sync fetches each slot's
// bitmap (KVM_GET_DIRTY_LOG) and write-protects exactly the reported pages
// again (KVM_CLEAR_DIRTY_LOG). With KVM_DIRTY_LOG_INITIALLY_SET, start() does
// not write-protect all of RAM up front: the first sync reports every page.

#include "agent/vmm/dirty_tracker.hpp"
#include "agent/vmm/kvm/kvm_vm.hpp"

namespace ferry {

class kvm_dirty_bitmap final : public dirty_tracker {
public:
  explicit kvm_dirty_bitmap(kvm_vm& vm);

  caf::expected<void> start() override;
  void stop() override;
  caf::expected<void> sync(dirty_bitmap& out) override;
  std::string_view name() const override { return "kvm-dirty-bitmap"; }

private:
  kvm_vm& vm_;
  std::vector<std::vector<uint64_t>> scratch_; // one bitmap buffer per slot
  bool active_ = false;
};

} // namespace ferry
