#pragma once
// One interface over every source of "which guest pages changed".
//
// Contract: after start(), each sync() ORs into `out` every page written since
// the previous sync() (or since start()) and re-arms tracking for those pages
// before returning. A write racing with sync() is reported by this sync or by
// the next one, never by neither — so a consumer that reads a page after the
// sync that reported it, and keeps syncing, never misses the page's last
// content. Trackers may report more than was written, never less; the KVM
// bitmap reports every page on its first sync (KVM_DIRTY_LOG_INITIALLY_SET).

#include "agent/vmm/dirty_bitmap.hpp"

#include <caf/expected.hpp>

#include <memory>
#include <string_view>
#include <vector>

namespace ferry {

class dirty_tracker {
public:
  virtual ~dirty_tracker() = default;
  virtual caf::expected<void> start() = 0;
  virtual void stop() = 0;
  virtual caf::expected<void> sync(dirty_bitmap& out) = 0;
  virtual std::string_view name() const = 0;
};

// Several trackers as one: the accelerator's log plus the agent's own writes.
class union_dirty_tracker final : public dirty_tracker {
public:
  explicit union_dirty_tracker(std::vector<dirty_tracker*> parts) : parts_(std::move(parts)) {}
  caf::expected<void> start() override;
  void stop() override;
  caf::expected<void> sync(dirty_bitmap& out) override;
  std::string_view name() const override { return "union"; }

private:
  std::vector<dirty_tracker*> parts_;
};

} // namespace ferry
