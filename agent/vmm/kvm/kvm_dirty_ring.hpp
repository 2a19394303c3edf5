#pragma once
// KVM's per-vCPU dirty rings. Each vCPU publishes the pages it dirties into a
// ring shared with us; harvesting marks entries collected and
// KVM_RESET_DIRTY_RINGS write-protects those pages again. A vCPU whose ring
// fills up exits with KVM_EXIT_DIRTY_RING_FULL and calls harvest_for_full_ring().
//
// While KVM logs, a reaper thread ("dirty-reaper") harvests every few
// milliseconds so the rings stay far from full: some hosts (nested, or KVM
// variants such as PVM) push entries past the soft limit — up to overwriting
// entries not yet collected — before the vCPU exits. Should a ring get out
// of step that way (its vCPU exits "full" twice with nothing to collect in
// between), it is brought back without ever moving KVM's reset position
// past its write position, and the next sync reports every page dirty,
// since which pages were lost cannot be known.

#include "agent/vmm/dirty_tracker.hpp"
#include "agent/vmm/kvm/kvm_vm.hpp"
#include "common/background_worker.hpp"

#include <mutex>

namespace ferry {

class kvm_dirty_ring final : public dirty_tracker {
public:
  explicit kvm_dirty_ring(kvm_vm& vm);
  ~kvm_dirty_ring() override;
  kvm_dirty_ring(const kvm_dirty_ring&) = delete;
  kvm_dirty_ring& operator=(const kvm_dirty_ring&) = delete;

  // vCPUs register their mapped ring when they are created.
  void add_ring(kvm_dirty_gfn* entries, uint32_t count);
  // ...and withdraw it before they unmap it, so the reaper never reads a
  // ring that is gone.
  void remove_ring(const kvm_dirty_gfn* entries);

  // A vCPU's KVM_EXIT_DIRTY_RING_FULL: harvest, and reset the rings even if
  // another thread collected the entries first — KVM lifts the vCPU's
  // "soft full" state only in KVM_RESET_DIRTY_RINGS, so skipping it would
  // leave the vCPU exiting for ever.
  caf::expected<void> harvest_for_full_ring(uint32_t vcpu);

  caf::expected<void> start() override;
  void stop() override;
  caf::expected<void> sync(dirty_bitmap& out) override;
  std::string_view name() const override { return "kvm-dirty-ring"; }

  // Entries with a slot or offset outside guest RAM (never expected from a
  // sane kernel); counted rather than trusted.
  uint64_t bad_entries() const;
  // Rings found overrun (and resynchronised) so far.
  uint64_t overruns() const;

  // Counting windows, alongside a migration's tracking or without one:
  // calc-dirty-rate's dirty-ring mode and the dirty limit each open one.
  // From window_open() on, every distinct page each vCPU dirties is counted;
  // window_read() harvests and returns the per-vCPU counts so far (index =
  // vCPU) and the distinct pages of all vCPUs together, and with `restart`
  // starts counting afresh; window_close() ends it.
  using window_id = uint32_t;
  caf::expected<window_id> window_open();
  struct measured {
    std::vector<uint64_t> per_vcpu;
    uint64_t total = 0;
  };
  caf::expected<measured> window_read(window_id w, bool restart = false);
  void window_close(window_id w);
  // Entries each vCPU's ring holds, for "time to fill a ring" figures.
  uint32_t ring_entries() const { return vm_.options().dirty_ring_entries; }

private:
  struct ring {
    kvm_dirty_gfn* entries;
    uint32_t count;
    uint32_t fetch = 0;
    uint64_t collected = 0;                  // entries marked collected, ever
    uint64_t collected_at_full = UINT64_MAX; // `collected` after its last "full" exit
  };
  struct window {
    bool open = false;
    std::vector<dirty_bitmap> seen; // per vCPU
    std::vector<uint64_t> distinct; // per vCPU: bits set in seen
    dirty_bitmap all{0};
    uint64_t total = 0;
  };
  void count_in_windows(size_t ring_index, uint64_t pfn);
  void reset_window(window& w);
  // Collects every published entry into the pending set and resets the rings.
  caf::expected<void> harvest_locked(bool always_reset = false);
  // KVM_RESET_DIRTY_RINGS, never cut short by a signal: entries it passed.
  caf::expected<uint32_t> reset_rings_locked();
  // One published entry: into the pending set and the windows, marked collected.
  void collect_locked(size_t ring_index, kvm_dirty_gfn& e);
  // Brings KVM's reset position and ours back in step (see the .cpp).
  caf::expected<void> recover_locked(ring& r);
  void reap();
  // KVM logs into the rings while a migration or a window wants it.
  caf::expected<void> update_logging_locked();

  kvm_vm& vm_;
  mutable std::mutex mtx_;
  std::vector<ring> rings_;
  dirty_bitmap pending_;
  uint64_t bad_entries_ = 0;
  bool active_ = false; // a migration's start() .. stop()
  std::vector<window> windows_;
  bool logging_ = false;
  bool overrun_ = false; // the next sync reports every page
  uint64_t overruns_ = 0;
  background_worker reaper_{mtx_}; // "dirty-reaper"; last: stops first
};

} // namespace ferry
