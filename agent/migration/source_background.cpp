// background-snapshot (QEMU's capability): the guest keeps running while
// the stream receives its RAM as it was when the snapshot began. The guest
// pauses once, briefly, while its CPU state is taken and all of RAM is
// write-protected; then this thread walks RAM in order, saving each page
// and making it writable again, while the `mig-wp` thread saves any page
// the guest is about to write first (the writer waits until its page is
// copied). Each page is saved exactly once, by whichever side claims it.
// The stream is an ordinary one: `-incoming` loads it.

#include "agent/migration/source_engine.hpp"

#include <cstring>

namespace ferry {

namespace {

// Copies the fault thread may hold before it makes the writer wait for the
// walk to take them.
constexpr size_t wp_queue_pages = 16384; // 64 MiB
constexpr uint64_t walk_run = 64;        // pages released at a time

} // namespace

caf::expected<source_event> migration_source::impl::background_setup() {
  senders.clear(); // this thread writes the stream alone
  const uint64_t pages = g.memory().pages();
  bg_saved = std::vector<std::atomic<uint64_t>>((pages + 63) / 64);
  guest_was_running = g.state() == run_state::running;
  downtime_start = clock_type::now();
  caf::expected<void> ok{};
  {
    auto hold = g.pause();
    if (guest_was_running)
      hooks.emit(qmp::event("STOP"));
    auto cpu = g.save_cpu_state();
    auto region = cpu ? write_protect_region::create(g.memory().bytes().data(), pages)
                      : caf::expected<std::unique_ptr<write_protect_region>>{cpu.error()};
    if (!region)
      ok = region.error();
    else if (auto p = (*region)->protect_all(); !p)
      ok = p.error();
    if (ok) {
      bg_cpu = std::move(*cpu);
      wp = std::move(*region);
    }
  }
  downtime_ms = ms_since(downtime_start);
  if (guest_was_running && g.state() == run_state::running)
    hooks.emit(qmp::event("RESUME"));
  if (!ok)
    return ok.error();
  wp_thread = std::thread{[this] { background_faults(); }};
  setup_ms = ms_since(start);
  if (!hooks.step(migration_event::setup_done))
    return check_stop_error();
  return source_event::setup_done;
}

bool migration_source::impl::background_claim(uint64_t pfn) {
  const uint64_t bit = uint64_t{1} << (pfn % 64);
  return (bg_saved[pfn / 64].fetch_or(bit, std::memory_order_acq_rel) & bit) == 0;
}

// The `mig-wp` thread: a write to a page not yet saved waits while the page
// is copied (the page is still protected, so unchanged), then goes on.
void migration_source::impl::background_faults() {
  const auto registered = name_migration_thread(hooks.threads, "mig-wp");
  const uint8_t* ram = g.memory().bytes().data();
  while (!wp_stop) {
    auto f = wp->next_write(std::chrono::milliseconds(50));
    if (f && *f && background_claim(**f)) {
      std::unique_lock lk{bg_mtx};
      bg_cv.wait(lk, [&] { return bg_queue_pfns.size() < wp_queue_pages || wp_stop; });
      const uint8_t* page = ram + **f * mig::page_size;
      bg_queue_pfns.push_back(**f);
      bg_queue_data.insert(bg_queue_data.end(), page, page + mig::page_size);
    }
    caf::expected<void> released{};
    if (f && *f)
      released = wp->release(**f, 1);
    if (!f || !released) {
      std::lock_guard lk{bg_mtx};
      bg_error = !f ? f.error() : released.error();
      return;
    }
  }
}

// The batch under construction goes out as one page record.
caf::expected<void> migration_source::impl::background_flush() {
  if (bg_entries.empty())
    return {};
  const size_t with_data = bg_data.size() / mig::page_size;
  mig::page_batch_parts batch;
  mig::encode_pages(batch, bg_entries, {});
  limiter.acquire(mig::header_size + batch.size() + bg_data.size(), stop);
  std::array<iovec, 3> parts{batch.parts[0], batch.parts[1], iovec{bg_data.data(), bg_data.size()}};
  if (auto ok = channels[0]->send(mig::record_type::pages, parts, 2); !ok)
    return ok;
  ctr.normal_pages.fetch_add(with_data, std::memory_order_relaxed);
  ctr.zero_pages.fetch_add(bg_entries.size() - with_data, std::memory_order_relaxed);
  ctr.add_sent(mig::header_size + batch.size() + bg_data.size(), false);
  bg_entries.clear();
  bg_data.clear();
  return {};
}

// One walk over RAM; the fault thread's copies go out first each time round.
caf::expected<source_event> migration_source::impl::background_walk() {
  ++passes;
  const uint64_t pages = g.memory().pages();
  const uint8_t* ram = g.memory().bytes().data();
  std::vector<uint64_t> queued;
  std::vector<uint8_t> queued_data;
  std::array<uint8_t, mig::page_size> copy{};
  const auto add = [&](uint64_t pfn, const uint8_t* page) -> caf::expected<void> {
    if (plan.detect_zero && mig::is_zero_page(page)) {
      bg_entries.push_back(pfn | mig::zero_page_bit);
      digest.set(pfn, mig::zero_page_hash());
    } else {
      bg_entries.push_back(pfn);
      bg_data.insert(bg_data.end(), page, page + mig::page_size);
      digest.set(pfn, mig::page_hash(page));
    }
    if (bg_entries.size() == mig::max_batch_pages)
      return background_flush();
    return {};
  };
  const auto drain = [&]() -> caf::expected<void> {
    {
      std::lock_guard lk{bg_mtx};
      if (bg_error)
        return bg_error;
      queued.swap(bg_queue_pfns);
      queued_data.swap(bg_queue_data);
    }
    bg_cv.notify_all();
    for (size_t i = 0; i < queued.size(); ++i)
      FERRY_TRY_VOID(add(queued[i], queued_data.data() + i * mig::page_size));
    queued.clear();
    queued_data.clear();
    return {};
  };
  for (uint64_t first = 0; first < pages; first += walk_run) {
    if (stop)
      return check_stop_error();
    FERRY_TRY_VOID(drain());
    const uint64_t end = std::min(pages, first + walk_run);
    for (uint64_t pfn = first; pfn < end; ++pfn) {
      const uint64_t bit = uint64_t{1} << (pfn % 64);
      if ((bg_saved[pfn / 64].load(std::memory_order_acquire) & bit) != 0)
        continue;
      // Copied before it is claimed: had the fault thread claimed it first,
      // the page may have changed since, and this copy is dropped.
      std::memcpy(copy.data(), ram + pfn * mig::page_size, mig::page_size);
      if (background_claim(pfn))
        FERRY_TRY_VOID(add(pfn, copy.data()));
    }
    FERRY_TRY_VOID(wp->release(first, end - first));
    remaining_bytes = (pages - end) * mig::page_size;
  }
  FERRY_TRY_VOID(drain());
  FERRY_TRY_VOID(background_flush());
  remaining_bytes = 0;
  ++ctr.sync_count;
  return source_event::pass_converged;
}

// The protection and the fault thread go (the walk has released every page,
// or the migration ended early: every writer goes on).
void migration_source::impl::background_end() {
  wp_stop = true;
  bg_cv.notify_all();
  if (wp_thread.joinable())
    wp_thread.join();
  wp.reset();
}

} // namespace ferry
