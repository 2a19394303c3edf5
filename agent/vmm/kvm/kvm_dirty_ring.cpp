#include "agent/vmm/kvm/kvm_dirty_ring.hpp"

#include "common/error.hpp"

#include <sys/ioctl.h>

#include <algorithm>
#include <chrono>

namespace ferry {

namespace {
// Harvest period of the reaper: a vCPU dirtying 200k fresh pages a second
// adds about 400 entries in 2 ms, under half of the smallest (1024) ring.
constexpr auto reap_every = std::chrono::milliseconds(2);
} // namespace

kvm_dirty_ring::kvm_dirty_ring(kvm_vm& vm) : vm_(vm), pending_(vm.memory().pages()) {
  reaper_.start("dirty-reaper", [this] { reap(); });
}

kvm_dirty_ring::~kvm_dirty_ring() {
  reaper_.stop();
}

void kvm_dirty_ring::reap() {
  std::unique_lock lk{mtx_};
  while (!reaper_.stopping()) {
    if (!logging_) {
      reaper_.wait(lk);
      continue;
    }
    // A failure here shows again, and is reported, where a sync harvests.
    (void) harvest_locked();
    reaper_.wait_for(lk, reap_every);
  }
}

uint64_t kvm_dirty_ring::overruns() const {
  std::lock_guard guard{mtx_};
  return overruns_;
}

bool kvm_dirty_ring::resync_locked(ring& r) {
  const uint32_t here = __atomic_load_n(&r.entries[r.fetch % r.count].flags, __ATOMIC_ACQUIRE);
  if ((here & KVM_DIRTY_GFN_F_DIRTY) != 0)
    return false;
  // KVM's reset position is stuck on this unpublished entry; the published
  // ones follow it. Mark the gap collected so the reset walks through it.
  for (uint32_t k = 1; k < r.count; ++k) {
    auto& e = r.entries[(r.fetch + k) % r.count];
    if ((__atomic_load_n(&e.flags, __ATOMIC_ACQUIRE) & KVM_DIRTY_GFN_F_DIRTY) == 0)
      continue;
    for (uint32_t j = 0; j < k; ++j)
      __atomic_store_n(&r.entries[(r.fetch + j) % r.count].flags, KVM_DIRTY_GFN_F_RESET,
                       __ATOMIC_RELEASE);
    r.fetch += k;
    return true;
  }
  return false;
}

void kvm_dirty_ring::add_ring(kvm_dirty_gfn* entries, uint32_t count) {
  std::lock_guard guard{mtx_};
  rings_.push_back({entries, count});
}

void kvm_dirty_ring::remove_ring(const kvm_dirty_gfn* entries) {
  std::lock_guard guard{mtx_};
  std::erase_if(rings_, [&](const ring& r) { return r.entries == entries; });
}

caf::expected<void> kvm_dirty_ring::harvest_for_full_ring(uint32_t vcpu) {
  std::lock_guard guard{mtx_};
  if (auto ok = harvest_locked(true); !ok)
    return ok;
  if (vcpu >= rings_.size())
    return {};
  ring& r = rings_[vcpu];
  if (resync_locked(r)) {
    ++overruns_;
    overrun_ = true;
    r.empty_full_exits = 0;
    return harvest_locked(true);
  }
  // Another thread may have emptied the ring between KVM's exit and this
  // harvest, so one such exit proves nothing; several in a row do.
  if (++r.empty_full_exits < 3)
    return {};
  r.empty_full_exits = 0;
  ++overruns_;
  overrun_ = true;
  lap_reset_locked(r);
  if (::ioctl(vm_.fd(), KVM_RESET_DIRTY_RINGS, 0) < 0)
    return make_system_error("KVM_RESET_DIRTY_RINGS");
  return {};
}

void kvm_dirty_ring::lap_reset_locked(ring& r) {
  for (uint32_t k = 0; k < r.count; ++k)
    __atomic_store_n(&r.entries[(r.fetch + k) % r.count].flags, KVM_DIRTY_GFN_F_RESET,
                     __ATOMIC_RELEASE);
}

caf::expected<void> kvm_dirty_ring::harvest_locked(bool always_reset) {
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
        count_in_windows(static_cast<size_t>(&r - rings_.data()), pfn);
      } else {
        ++bad_entries_;
      }
      __atomic_store_n(&e.flags, KVM_DIRTY_GFN_F_RESET, __ATOMIC_RELEASE);
      ++r.fetch;
      r.empty_full_exits = 0;
      any = true;
    }
  }
  if ((any || always_reset) && ::ioctl(vm_.fd(), KVM_RESET_DIRTY_RINGS, 0) < 0)
    return make_system_error("KVM_RESET_DIRTY_RINGS");
  return {};
}

caf::expected<void> kvm_dirty_ring::start() {
  if (vm_.options().dirty_log != dirty_log_kind::ring)
    return make_ferry_error(errc::not_supported, "this VM tracks dirty pages with the bitmap");
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
  const bool want = active_ || std::any_of(windows_.begin(), windows_.end(),
                                           [](const window& w) { return w.open; });
  if (want == logging_)
    return {};
  if (auto ok = vm_.set_dirty_logging(want); !ok)
    return ok;
  logging_ = want;
  reaper_.wake();
  return {};
}

void kvm_dirty_ring::count_in_windows(size_t ring_index, uint64_t pfn) {
  for (auto& w : windows_) {
    if (!w.open)
      continue;
    if (!w.seen[ring_index].test(pfn)) {
      w.seen[ring_index].set(pfn);
      ++w.distinct[ring_index];
    }
    if (!w.all.test(pfn)) {
      w.all.set(pfn);
      ++w.total;
    }
  }
}

void kvm_dirty_ring::reset_window(window& w) {
  const uint64_t pages = vm_.memory().pages();
  w.seen.assign(rings_.size(), dirty_bitmap{pages});
  w.distinct.assign(rings_.size(), 0);
  w.all = dirty_bitmap{pages};
  w.total = 0;
}

caf::expected<kvm_dirty_ring::window_id> kvm_dirty_ring::window_open() {
  std::lock_guard guard{mtx_};
  // What the rings hold now was dirtied before the window opened.
  if (auto ok = harvest_locked(); !ok)
    return ok.error();
  auto it = std::find_if(windows_.begin(), windows_.end(), [](const window& w) { return !w.open; });
  if (it == windows_.end())
    it = windows_.insert(windows_.end(), window{});
  reset_window(*it);
  it->open = true;
  if (auto ok = update_logging_locked(); !ok) {
    it->open = false;
    return ok.error();
  }
  return static_cast<window_id>(it - windows_.begin());
}

caf::expected<kvm_dirty_ring::measured> kvm_dirty_ring::window_read(window_id id, bool restart) {
  std::lock_guard guard{mtx_};
  if (id >= windows_.size() || !windows_[id].open)
    return make_ferry_error(errc::bad_run_state, "no such dirty-ring counting window");
  if (auto ok = harvest_locked(); !ok)
    return ok.error();
  window& w = windows_[id];
  measured m{w.distinct, w.total};
  if (restart)
    reset_window(w);
  return m;
}

void kvm_dirty_ring::window_close(window_id id) {
  std::lock_guard guard{mtx_};
  if (id >= windows_.size())
    return;
  windows_[id] = window{};
  (void) update_logging_locked();
}

caf::expected<void> kvm_dirty_ring::sync(dirty_bitmap& out) {
  std::lock_guard guard{mtx_};
  if (!active_)
    return make_ferry_error(errc::bad_run_state, "dirty logging is not started");
  if (auto ok = harvest_locked(); !ok)
    return ok;
  if (overrun_) {
    pending_.set_all();
    overrun_ = false;
  }
  out.merge(pending_);
  pending_.clear();
  return {};
}

uint64_t kvm_dirty_ring::bad_entries() const {
  std::lock_guard guard{mtx_};
  return bad_entries_;
}

} // namespace ferry
