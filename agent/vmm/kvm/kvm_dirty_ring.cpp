#include "agent/vmm/kvm/kvm_dirty_ring.hpp"

#include "common/error.hpp"

#include <pthread.h>
#include <signal.h>
#include <sys/ioctl.h>

#include <cerrno>

#include <algorithm>
#include <chrono>
#include <optional>
#include <string>
#include <vector>

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
  // Nothing of this ring collected since its last "full" exit was handled
  // (which ended with a reset): KVM found it full again with its reset
  // position where that reset left it, so the position is behind KVM's
  // write position and the two are out of step. One empty exit alone proves
  // nothing: the reaper may have emptied the ring since the exit.
  caf::expected<void> ok{};
  if (r.collected == r.collected_at_full)
    ok = recover_locked(r);
  r.collected_at_full = r.collected;
  return ok;
}

caf::expected<void> kvm_dirty_ring::recover_locked(ring& r) {
  // Only where KVM logs past the point where it should have exited (some
  // nested hosts and KVM variants do): an entry overwritten before it was
  // collected, or collected and then overwritten before the reset reached
  // it, leaves KVM's reset position on a slot nobody will mark collected.
  // This runs on the vCPU's own thread, out of KVM_RUN: its ring holds
  // still. Which pages were lost cannot be known: the next sync reports
  // every page. Nothing here moves KVM's position past its write position —
  // from there the vCPU could never run again.
  ++overruns_;
  overrun_ = true;
  const size_t index = static_cast<size_t>(&r - rings_.data());
  auto flags_of = [&](uint32_t slot) {
    return __atomic_load_n(&r.entries[slot].flags, __ATOMIC_ACQUIRE);
  };
  auto set_flags = [&](uint32_t slot, uint32_t f) {
    __atomic_store_n(&r.entries[slot].flags, f, __ATOMIC_RELEASE);
  };
  // Ours becomes KVM's position, `slot`.
  auto align = [&](uint32_t slot) { r.fetch += (slot + r.count - r.fetch % r.count) % r.count; };
  // 1. Collect every published entry, wherever it lies. Had KVM's position
  //    been on one of them, the reset moves it over a run of collected
  //    slots (which it empties) and the vCPU just retries; ours follows.
  for (uint32_t k = 0; k < r.count; ++k)
    if ((flags_of(k) & KVM_DIRTY_GFN_F_DIRTY) != 0)
      collect_locked(index, r.entries[k]);
  std::vector<bool> collected_slot(r.count);
  for (uint32_t k = 0; k < r.count; ++k)
    collected_slot[k] = flags_of(k) == KVM_DIRTY_GFN_F_RESET;
  auto moved = reset_rings_locked();
  if (!moved)
    return moved.error();
  if (*moved > 0) {
    for (uint32_t k = 0; k < r.count; ++k) {
      const uint32_t next = (k + 1) % r.count;
      const bool walked = collected_slot[k] && flags_of(k) == 0;
      const bool next_walked = collected_slot[next] && flags_of(next) == 0;
      if (walked && !next_walked)
        align(next);
    }
    return {};
  }
  // 2. KVM's position is on an empty slot, and this exit proves it is
  //    behind the write position: moving it by one is safe. Find it by
  //    marking one empty slot collected at a time, ours first, until a reset
  //    takes one — and with it any collected slots right after. (No other
  //    ring has anything pending: the reset above walked as far as any could
  //    go.)
  std::optional<uint32_t> at;
  for (uint32_t k = 0; k < r.count && !at; ++k) {
    const uint32_t slot = (r.fetch + k) % r.count;
    if (flags_of(slot) != 0)
      continue;
    set_flags(slot, KVM_DIRTY_GFN_F_RESET);
    auto took = reset_rings_locked();
    if (!took)
      return took.error();
    if (*took > 0)
      at = (slot + *took) % r.count;
    else
      set_flags(slot, 0);
  }
  if (!at)
    return make_ferry_error(errc::not_supported, "the KVM dirty ring of vCPU " +
                                                   std::to_string(index) +
                                                   " is out of step and cannot be brought back");
  // 3. A collected slot ahead of KVM's position (within one lap) holds an
  //    entry KVM wrote after it, so the empty slots before the last such
  //    slot are lost entries: mark them collected and let one reset pass
  //    them all. Empty slots after it may be lost or not yet written; a
  //    further "full" exit moves past them one at a time as above.
  std::optional<uint32_t> last;
  for (uint32_t k = 0; k + 1 < r.count; ++k)
    if (flags_of((*at + k) % r.count) != 0)
      last = k;
  uint32_t passed = 0;
  if (last) {
    for (uint32_t k = 0; k <= *last; ++k)
      if (flags_of((*at + k) % r.count) == 0)
        set_flags((*at + k) % r.count, KVM_DIRTY_GFN_F_RESET);
    auto walked = reset_rings_locked();
    if (!walked)
      return walked.error();
    passed = *walked;
  }
  align((*at + passed) % r.count);
  return {};
}

caf::expected<uint32_t> kvm_dirty_ring::reset_rings_locked() {
  // From Linux 6.17 KVM ends a reset early, without an error, when the
  // calling thread has a signal pending — and a vCPU thread is kicked with
  // SIGUSR1 at any moment (pause, the dirty limit's brake). Entries marked
  // collected would stay unreset and the vCPU would exit "full" again.
  // Signals wait for the ioctl to end; they are delivered after it.
  sigset_t all;
  sigset_t before;
  ::sigfillset(&all);
  ::pthread_sigmask(SIG_BLOCK, &all, &before);
  const int rc = ::ioctl(vm_.fd(), KVM_RESET_DIRTY_RINGS, 0);
  const int err = errno;
  ::pthread_sigmask(SIG_SETMASK, &before, nullptr);
  if (rc < 0) {
    errno = err;
    return make_system_error("KVM_RESET_DIRTY_RINGS");
  }
  return static_cast<uint32_t>(rc);
}

void kvm_dirty_ring::collect_locked(size_t ring_index, kvm_dirty_gfn& e) {
  const auto& slots = vm_.slots();
  const uint32_t slot_id = e.slot & 0xffff;
  if (slot_id < slots.size() && e.offset < slots[slot_id].size / page_size) {
    const uint64_t pfn = slots[slot_id].guest_phys / page_size + e.offset;
    pending_.set(pfn);
    count_in_windows(ring_index, pfn);
  } else {
    ++bad_entries_;
  }
  __atomic_store_n(&e.flags, KVM_DIRTY_GFN_F_RESET, __ATOMIC_RELEASE);
  ++rings_[ring_index].collected;
}

caf::expected<void> kvm_dirty_ring::harvest_locked(bool always_reset) {
  bool any = false;
  for (size_t i = 0; i < rings_.size(); ++i) {
    ring& r = rings_[i];
    for (;;) {
      kvm_dirty_gfn& e = r.entries[r.fetch % r.count];
      // Acquire pairs with the kernel's release when it publishes an entry.
      const uint32_t flags = __atomic_load_n(&e.flags, __ATOMIC_ACQUIRE);
      if ((flags & KVM_DIRTY_GFN_F_DIRTY) == 0)
        break;
      collect_locked(i, e);
      ++r.fetch;
      any = true;
    }
  }
  if (any || always_reset) {
    if (auto ok = reset_rings_locked(); !ok)
      return ok.error();
  }
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
