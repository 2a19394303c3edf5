#include "agent/kvm_dirty_ring.hpp"

#include "agent/agent_error.hpp"

#include <sys/ioctl.h>

namespace ferry {

kvm_dirty_ring::kvm_dirty_ring(kvm_vm& vm) : vm_(vm), pending_(vm.memory().pages()) {}

void kvm_dirty_ring::add_ring(kvm_dirty_gfn* entries, uint32_t count) {
  std::lock_guard guard{mtx_};
  rings_.push_back({entries, count});
}

caf::expected<void> kvm_dirty_ring::harvest() {
  std::lock_guard guard{mtx_};
  return harvest_locked();
}

caf::expected<void> kvm_dirty_ring::harvest_locked() {
  const auto& slots = vm_.slots();
  bool any = false;
  for (auto& r : rings_) {
    for (;;) {
      kvm_dirty_gfn& e = r.entries[r.fetch % r.count];
      // Acquire pairs with the kernel's release when it publishes an entry.
      const uint32_t flags = __atomic_load_n(&e.flags, __ATOMIC_ACQUIRE);
      if ((flags & KVM_DIRTY_GFN_F_DIRTY) == 0)
        break;
      const uint32_t slot_id = e.slot & 0xffff;
      if (slot_id < slots.size() && e.offset < slots[slot_id].size / page_size)
        pending_.set(slots[slot_id].guest_phys / page_size + e.offset);
      else
        ++bad_entries_;
      __atomic_store_n(&e.flags, KVM_DIRTY_GFN_F_RESET, __ATOMIC_RELEASE);
      ++r.fetch;
      any = true;
    }
  }
  if (any && ::ioctl(vm_.fd(), KVM_RESET_DIRTY_RINGS, 0) < 0)
    return make_system_error("KVM_RESET_DIRTY_RINGS");
  return {};
}

caf::expected<void> kvm_dirty_ring::start() {
  if (vm_.options().dirty_log != dirty_log_kind::ring)
    return make_agent_error(agent_errc::not_supported,
                            "this VM tracks dirty pages with the bitmap");
  std::lock_guard guard{mtx_};
  // Entries from before start() are stale: drop them.
  if (auto ok = harvest_locked(); !ok)
    return ok;
  pending_.clear();
  if (auto ok = vm_.set_dirty_logging(true); !ok)
    return ok;
  active_ = true;
  return {};
}

void kvm_dirty_ring::stop() {
  std::lock_guard guard{mtx_};
  if (active_)
    (void) vm_.set_dirty_logging(false);
  active_ = false;
}

caf::expected<void> kvm_dirty_ring::sync(dirty_bitmap& out) {
  std::lock_guard guard{mtx_};
  if (!active_)
    return make_agent_error(agent_errc::bad_run_state, "dirty logging is not started");
  if (auto ok = harvest_locked(); !ok)
    return ok;
  out.merge(pending_);
  pending_.clear();
  return {};
}

uint64_t kvm_dirty_ring::bad_entries() const {
  std::lock_guard guard{mtx_};
  return bad_entries_;
}

} // namespace ferry
