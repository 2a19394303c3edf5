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
      if (slot_id < slots.size() && e.offset < slots[slot_id].size / page_size) {
        const uint64_t pfn = slots[slot_id].guest_phys / page_size + e.offset;
        pending_.set(pfn);
        if (measuring_) {
          if (!r.seen.test(pfn)) {
            r.seen.set(pfn);
            ++r.distinct;
          }
          if (!measured_all_.test(pfn)) {
            measured_all_.set(pfn);
            ++measured_total_;
          }
        }
      } else {
        ++bad_entries_;
      }
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
  active_ = true;
  if (auto ok = update_logging_locked(); !ok) {
    active_ = false;
    return ok;
  }
  return {};
}

void kvm_dirty_ring::stop() {
  std::lock_guard guard{mtx_};
  active_ = false;
  (void) update_logging_locked();
}

caf::expected<void> kvm_dirty_ring::update_logging_locked() {
  const bool want = active_ || measuring_;
  if (want == logging_)
    return {};
  if (auto ok = vm_.set_dirty_logging(want); !ok)
    return ok;
  logging_ = want;
  return {};
}

caf::expected<void> kvm_dirty_ring::measure_begin() {
  std::lock_guard guard{mtx_};
  // What the rings hold now was dirtied before the measurement.
  if (auto ok = harvest_locked(); !ok)
    return ok;
  const uint64_t pages = vm_.memory().pages();
  for (auto& r : rings_) {
    r.seen = dirty_bitmap{pages};
    r.distinct = 0;
  }
  measured_all_ = dirty_bitmap{pages};
  measured_total_ = 0;
  measuring_ = true;
  if (auto ok = update_logging_locked(); !ok) {
    measuring_ = false;
    return ok;
  }
  return {};
}

caf::expected<kvm_dirty_ring::measured> kvm_dirty_ring::measure_read() {
  std::lock_guard guard{mtx_};
  if (!measuring_)
    return make_agent_error(agent_errc::bad_run_state, "no dirty-ring measurement under way");
  if (auto ok = harvest_locked(); !ok)
    return ok.error();
  measured m;
  for (const auto& r : rings_)
    m.per_vcpu.push_back(r.distinct);
  m.total = measured_total_;
  return m;
}

void kvm_dirty_ring::measure_end() {
  std::lock_guard guard{mtx_};
  measuring_ = false;
  for (auto& r : rings_)
    r.seen = dirty_bitmap{0};
  measured_all_ = dirty_bitmap{0};
  (void) update_logging_locked();
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
