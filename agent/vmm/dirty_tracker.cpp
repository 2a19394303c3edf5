#include "agent/vmm/dirty_tracker.hpp"

namespace ferry {

caf::expected<void> union_dirty_tracker::start() {
  for (size_t i = 0; i < parts_.size(); ++i) {
    if (auto ok = parts_[i]->start(); !ok) {
      for (size_t j = 0; j < i; ++j)
        parts_[j]->stop();
      return ok.error();
    }
  }
  return {};
}

void union_dirty_tracker::stop() {
  for (auto* p : parts_)
    p->stop();
}

caf::expected<void> union_dirty_tracker::sync(dirty_bitmap& out) {
  for (auto* p : parts_)
    if (auto ok = p->sync(out); !ok)
      return ok.error();
  return {};
}

} // namespace ferry
