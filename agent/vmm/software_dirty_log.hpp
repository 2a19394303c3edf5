#pragma once
// Dirty log for writes the agent itself makes into guest RAM (KVM cannot see
// them) and for the -accel none guest's dirtier. Lock-free: any thread may
// mark while another syncs.

#include "agent/vmm/dirty_tracker.hpp"

#include <atomic>
#include <cstdint>
#include <memory>

namespace ferry {

class software_dirty_log final : public dirty_tracker {
public:
  explicit software_dirty_log(uint64_t pages);

  // Call after the write has landed: a sync between the write and the mark
  // then still leaves the mark for the next sync.
  void mark(uint64_t guest_addr, uint64_t len);
  void mark_page(uint64_t page);

  caf::expected<void> start() override;
  void stop() override;
  caf::expected<void> sync(dirty_bitmap& out) override;
  std::string_view name() const override { return "software"; }

private:
  uint64_t pages_;
  std::unique_ptr<std::atomic<uint64_t>[]> words_;
  std::atomic<bool> active_{false};
};

} // namespace ferry
