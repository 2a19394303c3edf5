// The outgoing engine's postcopy (after migrate-start-postcopy): the switch
// — guest stopped, the pages the destination lacks named, CPU and device
// state sent, the destination's ready answered with go — and then the owed
// pages, the ones its guest is waiting on first, read from the return path
// by the `mig-return` thread.
#include "agent/migration/source_engine.hpp"

#include <algorithm>
#include <cstdio>

namespace ferry {

namespace {

// How long the source waits for the destination's word that every page is
// placed, once it has sent them all.
constexpr auto placed_wait = std::chrono::seconds(30);
// Owed pages sent along after a requested one (64 KiB with it).
constexpr uint64_t postcopy_readahead = 15;
// What one background batch may take of max-postcopy-bandwidth (pages a
// vCPU waits on are not held to it: the limit paces the background stream,
// not the guest).
constexpr uint64_t background_batch_bytes =
  mig::header_size + mig::batch_prefix +
  mig::max_postcopy_pages * (mig::postcopy_entry_size + mig::page_size);

} // namespace

// postcopy-preempt's channel: opened with the others (and again on a
// resume), named by its hello's index.
caf::expected<void> migration_source::impl::open_preempt(const mig::hello& main_hello) {
  FERRY_TRY(ch, open_channel());
  mig::hello h = main_hello;
  h.channel_index = mig::preempt_channel_index;
  if (auto ok = ch->send(mig::record_type::hello, mig::encode(h)); !ok)
    return ok;
  std::lock_guard lk{return_mtx};
  preempt = ch;
  return {};
}

caf::expected<source_event> migration_source::impl::postcopy_switch() {
  // `todo` holds what the last pass left unsent and what was dirtied since;
  // the last sync adds what was dirtied until the guest stopped.
  if (auto ok = stop_and_sync(); !ok)
    return ok.error();
  g.dirty_log().stop();
  tracking = false;
  if (auto ok = drain_senders(); !ok)
    return ok.error();
  owed = todo;
  switch_owed = todo;
  todo.clear();
  remaining_bytes = owed.count() * mig::page_size;
  if (auto ok = send_discards(); !ok)
    return ok.error();
  owed.for_each([&](uint64_t p) { digest.forget(p); });
  if (auto ok = send_state(); !ok)
    return ok.error();
  const auto run = mig::encode_postcopy_run(owed.count());
  if (auto ok = channels[0]->send(mig::record_type::postcopy_run, run); !ok)
    return ok.error();
  // Until the destination says ready, nothing has run there: any failure
  // up to here leaves this guest to run on.
  if (auto ok = await_ready(); !ok)
    return ok.error();
  if (!hooks.step(migration_event::start_postcopy)) {
    (void) channels[0]->send(mig::record_type::abort, mig::encode(mig::status_msg{1, "cancelled"}));
    cancelled = true;
    return cancelled_error();
  }
  // From the first byte of go on, the destination may be running the guest:
  // this copy is stale and stays stopped, whatever happens next.
  postcopy_committed = true;
  if (auto ok = channels[0]->send(mig::record_type::go, mig::encode(mig::status_msg{})); !ok)
    return ok.error();
  downtime_ms = ms_since(downtime_start);
  limiter.set_limit(plan.max_postcopy_bandwidth);
  return source_event::destination_running;
}

// The owed pages as discard records, a word range at a time (empty ranges
// skipped).
caf::expected<void> migration_source::impl::send_discards() {
  std::vector<uint64_t> words;
  for (size_t w0 = 0; w0 < owed.word_count(); w0 += mig::max_discard_words) {
    const size_t end = std::min<size_t>(owed.word_count(), w0 + mig::max_discard_words);
    words.clear();
    bool any = false;
    for (size_t w = w0; w < end; ++w) {
      words.push_back(owed.word(w));
      any = any || words.back() != 0;
    }
    if (!any)
      continue;
    const auto rec = mig::encode_discard(w0 * 64, words);
    if (auto ok = channels[0]->send(mig::record_type::discard, rec); !ok)
      return ok;
    ctr.add_sent(mig::header_size + rec.size(), false);
  }
  return {};
}

// The background walk goes on where the guest last asked (QEMU's too): the
// pages just ahead of a vCPU are the ones it needs next, and a walk left
// behind it would only feed it pages it no longer waits for. It wraps round
// for what it skipped.
void migration_source::impl::next_background(std::vector<uint64_t>& pfns, size_t& cursor) {
  std::lock_guard lk{return_mtx};
  if (jump_to) {
    cursor = static_cast<size_t>(*jump_to / 64);
    jump_to.reset();
  }
  size_t scanned = 0;
  while (pfns.size() < mig::max_postcopy_pages && scanned <= owed.word_count()) {
    if (cursor >= owed.word_count())
      cursor = 0;
    const uint64_t bits = owed.word(cursor);
    if (bits == 0) {
      ++cursor;
      ++scanned;
      continue;
    }
    const uint64_t p = cursor * 64 + static_cast<uint64_t>(__builtin_ctzll(bits));
    owed.clear_page(p);
    pfns.push_back(p);
  }
}

// postcopy-preempt, on the return-path thread: the request's pages still
// owed go at once on the preempt channel.
caf::expected<void> migration_source::impl::serve_preempted(const mig::page_request& r) {
  std::vector<uint64_t> pfns;
  {
    std::lock_guard lk{return_mtx};
    take_requested(r, pfns);
    if (pfns.empty())
      return {};
    serving = true;
  }
  auto ok = send_postcopy_batch(*preempt, pfns);
  std::lock_guard lk{return_mtx};
  serving = false;
  return_cv.notify_all();
  return ok;
}

// With return_mtx held: the request's pages still owed (one already sent is
// on its way), then the owed pages just after them — a guest that touched
// page p is likely to touch p + 1 next, and each page it reaches first
// costs it a round trip.
void migration_source::impl::take_requested(const mig::page_request& r,
                                            std::vector<uint64_t>& pfns) {
  const uint64_t end = std::min(r.pfn + r.count + postcopy_readahead, owed.pages());
  for (uint64_t p = r.pfn; p < end && pfns.size() < mig::max_postcopy_pages; ++p)
    if (owed.test(p)) {
      owed.clear_page(p);
      pfns.push_back(p);
    }
  jump_to = end;
}

// The queued requests' pages, up to a batch.
void migration_source::impl::next_requested(std::vector<uint64_t>& pfns) {
  std::lock_guard lk{return_mtx};
  while (!requests.empty() && pfns.size() < mig::max_postcopy_pages) {
    take_requested(requests.front(), pfns);
    requests.pop_front();
  }
}

caf::expected<void> migration_source::impl::send_postcopy_batch(migration_channel& ch,
                                                                std::span<const uint64_t> pfns) {
  std::array<mig::postcopy_page, mig::max_postcopy_pages> pages{};
  std::array<iovec, mig::max_postcopy_pages + 1> parts{};
  size_t n_parts = 1;
  size_t data_bytes = 0;
  const uint8_t* ram = g.memory().data();
  for (size_t i = 0; i < pfns.size(); ++i) {
    const uint8_t* page = ram + pfns[i] * mig::page_size;
    mig::postcopy_page& pg = pages[i];
    pg.pfn = pfns[i];
    pg.zero = plan.detect_zero && mig::is_zero_page(page);
    if (pg.zero) {
      ctr.zero_pages.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    pg.hash = mig::page_hash(page);
    // The guest is stopped here for good: its pages hold still.
    parts[n_parts++] = {const_cast<uint8_t*>(page), mig::page_size};
    data_bytes += mig::page_size;
    ctr.normal_pages.fetch_add(1, std::memory_order_relaxed);
  }
  std::vector<uint8_t> head;
  mig::encode_postcopy_head(head, {pages.data(), pfns.size()});
  parts[0] = {head.data(), head.size()};
  const uint64_t bytes = mig::header_size + head.size() + data_bytes;
  if (auto ok = ch.send(mig::record_type::postcopy_pages, {parts.data(), n_parts}, 1); !ok)
    return ok;
  ctr.postcopy_bytes.fetch_add(bytes, std::memory_order_relaxed);
  return {};
}

// Waits for max-postcopy-bandwidth's budget for one background batch;
// false when a request (without preempt: this thread serves it) or the end
// came first.
bool migration_source::impl::await_budget() {
  std::unique_lock lk{return_mtx};
  for (;;) {
    if (stop || (preempt == nullptr && !requests.empty()))
      return false;
    if (limiter.try_acquire(background_batch_bytes))
      return true;
    return_cv.wait_for(lk, std::chrono::milliseconds(1));
  }
}

// release-ram: frees a run of this side's pages (read as zeros from now on).
// A failure frees nothing more and is said once; the migration goes on.
void migration_source::impl::release_run(uint64_t first, uint64_t pages) {
  if (pages == 0 || release_failed)
    return;
  if (auto ok = g.memory().discard(first, pages); !ok) {
    if (!release_failed.exchange(true))
      std::fprintf(stderr, "ferry: release-ram stops: %s\n", describe(ok.error()).c_str());
    return;
  }
  released_pages.fetch_add(pages, std::memory_order_relaxed);
}

// The pages precopy sent and postcopy does not owe: the destination proved
// it holds them (the switchover digest) before its guest ran.
void migration_source::impl::release_precopy_pages() {
  uint64_t first = 0;
  uint64_t n = 0;
  for (uint64_t p = 0; p < switch_owed.pages(); ++p) {
    if (!switch_owed.test(p)) {
      if (n == 0)
        first = p;
      ++n;
      continue;
    }
    release_run(first, n);
    n = 0;
  }
  release_run(first, n);
}

// Owed pages the destination says it placed: never needed here again (a
// recovery owes only what it has not placed). Pages it was never owed are
// not its to name.
void migration_source::impl::release_placed(const mig::discard_words& placed) {
  uint64_t first = 0;
  uint64_t n = 0;
  for (size_t i = 0; i < placed.word_count; ++i)
    for (uint64_t bits = placed.word(i); bits != 0; bits &= bits - 1) {
      const uint64_t p = placed.first_pfn + i * 64 + static_cast<uint64_t>(__builtin_ctzll(bits));
      if (!switch_owed.test(p))
        continue;
      if (n != 0 && p == first + n) {
        ++n;
        continue;
      }
      release_run(first, n);
      first = p;
      n = 1;
    }
  release_run(first, n);
}

// The owed pages: requested ones as soon as they are asked for, the rest in
// address order between them; then the end, and the destination's word
// that it placed them all.
caf::expected<source_event> migration_source::impl::postcopy() {
  {
    // A resumed postcopy starts afresh: the destination asks again for
    // what its guest still waits on.
    std::lock_guard lk{return_mtx};
    requests.clear();
    destination_done = false;
  }
  if (plan.release_ram && !precopy_released) {
    precopy_released = true;
    release_precopy_pages();
  }
  return_path = std::thread{[this] { read_return_path(); }};
  std::vector<uint64_t> pfns;
  size_t cursor = 0; // the next word of `owed` the background walk looks at
  for (;;) {
    if (stop)
      return check_stop_error();
    pfns.clear();
    if (preempt == nullptr)
      next_requested(pfns);
    if (pfns.empty()) {
      // The budget first, then the pages: a page taken and then held back
      // by max-postcopy-bandwidth could no longer be asked for. A request
      // coming in while it waits goes first.
      if (!await_budget())
        continue;
      next_background(pfns, cursor);
    }
    if (pfns.empty())
      break;
    if (auto ok = send_postcopy_batch(*channels[0], pfns); !ok)
      return ok.error();
    remaining_bytes = remaining_bytes > pfns.size() * mig::page_size
                        ? remaining_bytes - pfns.size() * mig::page_size
                        : 0;
  }
  if (preempt != nullptr) {
    // Every page is out or on its way: once the return path is done with
    // the one it may be sending, the preempt channel ends first.
    std::unique_lock lk{return_mtx};
    return_cv.wait(lk, [&] { return !serving || stop; });
    if (stop)
      return check_stop_error();
    if (auto ok = preempt->send(mig::record_type::end, std::span<const uint8_t>{}); !ok)
      return ok.error();
  }
  if (auto ok = channels[0]->send(mig::record_type::end, std::span<const uint8_t>{}); !ok)
    return ok.error();
  remaining_bytes = 0;
  {
    std::unique_lock lk{return_mtx};
    if (!return_cv.wait_for(lk, placed_wait, [&] { return destination_done || stop; }))
      return make_ferry_error(errc::system_error,
                              "the destination did not confirm the postcopy pages within 30 s");
  }
  if (stop)
    return check_stop_error();
  stop_return_path();
  total_ms = ms_since(start);
  if (plan.release_ram)
    std::fprintf(stderr, "ferry: release-ram: %llu MiB freed on the source\n",
                 static_cast<unsigned long long>(released_pages.load() * mig::page_size >> 20));
  if (!hooks.complete(paused))
    return check_stop_error();
  return source_event::postcopy_done;
}

// The `mig-return` thread: the destination's page requests, then its ready.
// A request outside RAM, or anything else, fails the migration.
void migration_source::impl::read_return_path() {
  const auto registered = name_migration_thread(hooks.threads, "mig-return");
  std::vector<uint8_t> buf;
  const uint64_t ram_pages = g.memory().pages();
  for (;;) {
    auto h = channels[0]->receive(buf);
    if (!h) {
      note_failure(h.error());
      break;
    }
    if (h->type == mig::record_type::page_request) {
      auto r = mig::decode_page_request(buf, ram_pages);
      if (!r) {
        note_failure(r.error());
        break;
      }
      ctr.postcopy_requests.fetch_add(1, std::memory_order_relaxed);
      if (preempt != nullptr) {
        if (auto ok = serve_preempted(*r); !ok) {
          note_failure(ok.error());
          break;
        }
        continue;
      }
      std::lock_guard lk{return_mtx};
      // Bounded: a destination asks for at most what its guest waits on,
      // one request per waiting thread and page.
      if (requests.size() >= 4096) {
        note_failure(make_ferry_error(errc::system_error,
                                      "the destination sent more than 4096 page requests "
                                      "without waiting for them"));
        break;
      }
      requests.push_back(*r);
      return_cv.notify_all();
      continue;
    }
    if (h->type == mig::record_type::postcopy_received && plan.release_ram) {
      auto placed = mig::decode_discard(buf, ram_pages);
      if (!placed) {
        note_failure(placed.error());
        break;
      }
      release_placed(*placed);
      continue;
    }
    auto st = mig::decode_status(buf);
    if (h->type == mig::record_type::ready && st && st->code == 0) {
      std::lock_guard lk{return_mtx};
      destination_done = true;
      return_cv.notify_all();
      return;
    }
    note_failure(make_ferry_error(
      errc::system_error,
      std::string{"the destination "} +
        (h->type == mig::record_type::ready || h->type == mig::record_type::abort
           ? "failed in postcopy: " + (st ? st->text : std::string{})
           : std::string{"sent "} + mig::to_string(h->type) + " on the return path")));
    break;
  }
  std::lock_guard lk{return_mtx};
  return_cv.notify_all();
}

void migration_source::impl::after_link_lost(const caf::error& why) {
  stop_return_path();
  {
    std::lock_guard lk{return_mtx};
    preempt = nullptr;
    serving = false;
  }
  std::fprintf(stderr, "ferry: postcopy paused: %s\n", describe(why).c_str());
  std::lock_guard lk{mtx};
  channels.clear();
  error.clear();
  stop = false;
}

// Waits for `migrate resume=true` (or the end of the agent). A guard kept
// by the owner holds this stale copy stopped meanwhile.
caf::expected<source_event> migration_source::impl::postcopy_paused() {
  // From postcopy-active, or back from a recovery that failed.
  if (!hooks.step(migration_event::postcopy_broken))
    hooks.step(migration_event::recover_failed);
  std::unique_lock lk{return_mtx};
  return_cv.wait(lk, [&] { return resume_target.has_value() || cancelled.load(); });
  if (cancelled)
    return cancelled_error();
  return source_event::resume;
}

// A new main channel in the same session; the destination says which of
// the owed pages it placed, the source owes the rest, and go lets the pages
// flow again.
caf::expected<source_event> migration_source::impl::postcopy_recover() {
  {
    std::lock_guard lk{return_mtx};
    plan.target = *resume_target;
    plan.tls = resume_tls;
    resume_target.reset();
  }
  FERRY_TRY(main, open_channel());
  migration_channel& ch = *main;
  mig::hello h;
  h.session = session;
  h.flags = mig::flag_postcopy | mig::flag_resume | (plan.preempt ? mig::flag_preempt : 0) |
            (plan.release_ram ? mig::flag_release_ram : 0);
  h.ram_size = g.memory().size();
  h.uuid = plan.uuid;
  if (auto ok = ch.send(mig::record_type::hello, mig::encode(h)); !ok)
    return ok.error();
  std::vector<uint8_t> buf;
  FERRY_TRY(ack, ch.receive(buf));
  FERRY_TRY(st, mig::decode_status(buf));
  if (ack.type != mig::record_type::hello_ack || st.code != 0)
    return make_ferry_error(errc::invalid_argument,
                            "the destination refused to resume the postcopy: " + st.text);
  if (plan.preempt)
    if (auto ok = open_preempt(h); !ok)
      return ok.error();
  const uint64_t pages = g.memory().pages();
  dirty_bitmap received{pages};
  for (;;) {
    FERRY_TRY(rh, ch.receive(buf));
    if (rh.type == mig::record_type::ready)
      break;
    if (rh.type != mig::record_type::postcopy_received)
      return make_ferry_error(errc::system_error, std::string{"the destination sent "} +
                                                    mig::to_string(rh.type) +
                                                    " instead of the pages it received");
    FERRY_TRY(d, mig::decode_discard(buf, pages));
    if (plan.release_ram)
      release_placed(d);
    for (size_t i = 0; i < d.word_count; ++i)
      for (uint64_t bits = d.word(i); bits != 0; bits &= bits - 1)
        received.set(d.first_pfn + i * 64 + static_cast<uint64_t>(__builtin_ctzll(bits)));
  }
  dirty_bitmap left{pages};
  bool stray = false;
  switch_owed.for_each([&](uint64_t p) {
    if (!received.test(p))
      left.set(p);
  });
  received.for_each([&](uint64_t p) { stray = stray || !switch_owed.test(p); });
  if (stray)
    return make_ferry_error(errc::system_error, "the destination claims pages it was never owed");
  owed = std::move(left);
  remaining_bytes = owed.count() * mig::page_size;
  if (auto ok = ch.send(mig::record_type::go, mig::encode(mig::status_msg{})); !ok)
    return ok.error();
  if (!hooks.step(migration_event::recovered))
    return check_stop_error();
  return source_event::recovered;
}

// The reader ends by itself after ready, or when a failure interrupted the
// channel.
void migration_source::impl::stop_return_path() {
  if (return_path.joinable())
    return_path.join();
}

} // namespace ferry
