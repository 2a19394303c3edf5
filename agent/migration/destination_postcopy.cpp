// The receiving engine's postcopy: the discarded pages noted, the switch —
// digest checked over what arrived, those pages made absent and RAM watched
// by userfaultfd, CPU state loaded, ready, go — and then the guest runs here
// while its missing pages arrive: the `mig-fault` thread asks for the ones a
// thread of the guest is waiting on, this thread checks each arriving page
// against its hash and places it whole.
#include "agent/migration/destination_impl.hpp"
#include "agent/migration/percentile.hpp"

#include <algorithm>
#include <cstdio>
#include <cstring>

namespace ferry {

namespace {

// How often the fault thread looks up from userfaultfd to see if it should
// stop.
constexpr auto fault_poll = std::chrono::milliseconds(100);
// release-ram: how often the source hears which owed pages are here.
constexpr auto release_report_interval = std::chrono::milliseconds(250);

} // namespace

caf::expected<void> migration_destination::impl::note_discard(std::span<const uint8_t> payload) {
  const uint64_t pages = g.memory().pages();
  FERRY_TRY(d, mig::decode_discard(payload, pages));
  if (awaited.pages() == 0)
    awaited = dirty_bitmap{pages};
  std::vector<uint64_t> words(d.word_count);
  for (size_t i = 0; i < words.size(); ++i)
    words[i] = d.word(i);
  awaited.or_words(d.first_pfn, words.data(),
                   std::min<uint64_t>(uint64_t{d.word_count} * 64, pages - d.first_pfn));
  return {};
}

caf::expected<destination_event> migration_destination::impl::postcopy_load() {
  if (cpu.empty() || !devices)
    return refuse("postcopy began without the guest's CPU and device state");
  const uint64_t pages = g.memory().pages();
  if (awaited.pages() == 0)
    awaited = dirty_bitmap{pages};
  if (awaited.count() != awaited_count)
    return refuse("the source switched to postcopy owing " + std::to_string(awaited_count) +
                  " pages but discarded " + std::to_string(awaited.count()));
  // Everything that arrived before the switch is proven; what is still to
  // come is proven page by page as it arrives.
  awaited.for_each([&](uint64_t p) { digest.forget(p); });
  if (auto ok = check_digest(); !ok)
    return ok.error();
  g.memory().stop_prefill();
  uint64_t run_start = 0;
  uint64_t run_len = 0;
  caf::expected<void> dropped{};
  const auto flush = [&] {
    if (run_len != 0 && dropped)
      dropped = g.memory().discard(run_start, run_len);
    run_len = 0;
  };
  awaited.for_each([&](uint64_t p) {
    if (run_len != 0 && run_start + run_len == p) {
      ++run_len;
      return;
    }
    flush();
    run_start = p;
    run_len = 1;
  });
  flush();
  if (!dropped)
    return dropped.error();
  FERRY_TRY(r, userfault_region::create(g.memory().data(), pages));
  region = std::move(r);
  if (plan.blocktime)
    blocktime = std::make_unique<postcopy_blocktime>([this] { return g.vcpu_thread_ids(); });
  if (auto ok = g.load_cpu_state(cpu); !ok)
    return ok.error();
  // From here this copy is kept whatever happens (it never exits on an
  // error): if go was sent, the source's copy is stale.
  whole_guest = true;
  return await_go();
}

caf::expected<destination_event> migration_destination::impl::receive_postcopy() {
  if (!guest_runs_here.exchange(true) && !hooks.step(migration_event::start_postcopy))
    return refuse("the incoming migration was stopped");
  // After a recovery: what the guest was already waiting on is asked for
  // again (those faults were read before the link broke).
  if (auto ok = ask_again(); !ok)
    return ok.error();
  fault_stop = false;
  fault_thread = std::thread{[this] { watch_faults(); }};
  if (preempt != nullptr)
    preempt_thread = std::thread{[this] {
      const auto registered = name_migration_thread(hooks.threads, "mig-preempt");
      if (auto ok = place_until_end(*preempt); !ok)
        note_failure(ok.error());
    }};
  if (auto ok = place_until_end(*main); !ok)
    return ok.error();
  // The preempt channel ended before the main one (or failed, and stop
  // says so).
  join_preempt();
  if (stop) {
    std::lock_guard lk{mtx};
    return refuse(error);
  }
  if (awaited_placed != awaited_count)
    return refuse("the source ended postcopy having sent " + std::to_string(awaited_placed) +
                  " of the " + std::to_string(awaited_count) + " pages it owed");
  stop_fault_thread();
  // Every page is here: RAM is ordinary memory again.
  region.reset();
  report_requests();
  if (auto ok = main->send(mig::record_type::ready, mig::encode(mig::status_msg{})); !ok)
    return ok.error();
  return destination_event::postcopy_done;
}

// postcopy-pages records on `ch` (the main channel, or postcopy-preempt's),
// each placed, until its (empty) end; an abort or anything else fails it.
caf::expected<void> migration_destination::impl::place_until_end(migration_channel& ch) {
  std::vector<uint8_t> head;
  std::vector<uint8_t> staging;
  std::vector<uint8_t> buf;
  for (;;) {
    FERRY_TRY(h, ch.receive_header());
    if (h.type == mig::record_type::postcopy_pages) {
      if (auto ok = place_batch(ch, h, head, staging); !ok)
        return ok;
      continue;
    }
    if (auto ok = ch.receive_payload(h, buf); !ok)
      return ok;
    if (h.type == mig::record_type::end && h.length == 0)
      return {};
    if (h.type == mig::record_type::abort) {
      auto st = mig::decode_status(buf);
      return refuse("the source aborted the migration" + (st ? ": " + st->text : std::string{}));
    }
    return refuse(std::string{"unexpected "} + mig::to_string(h.type) + " record in postcopy");
  }
}

// One postcopy-pages record: head checked, data read into `staging`, each
// page checked against its hash and placed whole.
caf::expected<void> migration_destination::impl::place_batch(migration_channel& ch,
                                                             const mig::record_header& h,
                                                             std::vector<uint8_t>& head,
                                                             std::vector<uint8_t>& staging) {
  head.resize(std::min<size_t>(h.length, mig::batch_prefix));
  if (auto ok = ch.read_payload(head.data(), head.size()); !ok)
    return ok;
  FERRY_TRY(head_size, mig::postcopy_head_size(head));
  if (h.length < head_size)
    return refuse("postcopy-pages record shorter than its entries");
  head.resize(head_size);
  if (auto ok = ch.read_payload(head.data() + mig::batch_prefix, head_size - mig::batch_prefix);
      !ok)
    return ok;
  FERRY_TRY(b, mig::decode_postcopy_head(head, h.length, g.memory().pages()));
  staging.resize(size_t{b.data_pages} * mig::page_size);
  if (!staging.empty())
    if (auto ok = ch.read_payload(staging.data(), staging.size(), true); !ok)
      return ok;
  if (auto ok = ch.end_payload(h); !ok)
    return ok;
  // Every page checked before any is placed.
  const uint8_t* data = staging.data();
  for (uint32_t i = 0; i < b.count; ++i) {
    const mig::postcopy_page& pg = b.pages[i];
    if (!awaited.test(pg.pfn))
      return refuse("the source sent page " + std::to_string(pg.pfn) +
                    " in postcopy, which it had not discarded");
    if (pg.zero)
      continue;
    if (mig::page_hash(data) != pg.hash)
      return refuse("page " + std::to_string(pg.pfn) + " arrived corrupted (its hash differs)");
    data += mig::page_size;
  }
  // Then neighbouring pages with data in one copy each (a batch is mostly
  // one run), zero pages one by one.
  static const std::vector<uint8_t> zeros(mig::page_size, 0);
  data = staging.data();
  for (uint32_t i = 0; i < b.count;) {
    const mig::postcopy_page& pg = b.pages[i];
    uint32_t n = 1;
    if (!pg.zero)
      while (i + n < b.count && !b.pages[i + n].zero && b.pages[i + n].pfn == pg.pfn + n)
        ++n;
    FERRY_TRY(placed, region->place_run(pg.pfn, pg.zero ? zeros.data() : data, n));
    if (!placed)
      return refuse("a page from " + std::to_string(pg.pfn) + " on arrived twice in postcopy");
    if (!pg.zero)
      data += size_t{n} * mig::page_size;
    const auto now = clock_type::now();
    for (uint32_t k = i; k < i + n; ++k)
      placed_one(b.pages[k], now);
    i += n;
  }
  ctr.postcopy_bytes.fetch_add(mig::header_size + h.length, std::memory_order_relaxed);
  return {};
}

// How long the guest's requests took, from the fault to the page placed:
// in the log (the benchmark reads it; QMP has no member for it).
void migration_destination::impl::report_requests() {
  std::vector<uint32_t> l;
  {
    std::lock_guard lk{wait_mtx};
    l = request_latency_us;
  }
  if (l.empty()) {
    std::fprintf(stderr, "ferry: postcopy done: no page requests\n");
    return;
  }
  std::sort(l.begin(), l.end());
  const auto at = [&](double q) { return static_cast<double>(percentile(l, q)) / 1000.0; };
  std::fprintf(stderr,
               "ferry: postcopy done: %zu page requests, latency p50 %.2f ms p99 %.2f ms "
               "max %.2f ms\n",
               l.size(), at(0.5), at(0.99), static_cast<double>(l.back()) / 1000.0);
}

caf::expected<void> migration_destination::impl::ask_again() {
  std::vector<uint64_t> again;
  {
    std::lock_guard lk{wait_mtx};
    for (const auto& [pfn, since] : waiting)
      if (!region->placed(pfn))
        again.push_back(pfn);
  }
  for (uint64_t pfn : again) {
    if (auto ok =
          main->send(mig::record_type::page_request, mig::encode(mig::page_request{pfn, 1}));
        !ok)
      return ok;
    ctr.postcopy_requests.fetch_add(1, std::memory_order_relaxed);
  }
  return {};
}

void migration_destination::impl::after_link_lost(const caf::error& why) {
  stop_fault_thread();
  join_preempt();
  std::fprintf(stderr, "ferry: incoming postcopy paused: %s\n", describe(why).c_str());
  std::lock_guard lk{mtx};
  // A failed recovery's port is given back (the next migrate-recover may
  // want it).
  if (listener)
    listener->stop_listening();
  for (const auto& ch : channels)
    received_closed += ch->bytes_received();
  channels.clear();
  main = nullptr;
  preempt = nullptr;
  error.clear();
  stop = false;
}

// The guest runs on; a thread touching a missing page waits. Waits for
// migrate-recover (or the end of the agent).
caf::expected<destination_event> migration_destination::impl::postcopy_paused() {
  if (!hooks.step(migration_event::postcopy_broken))
    hooks.step(migration_event::recover_failed);
  std::unique_lock lk{mtx};
  recover_cv.wait(lk, [&] { return recover_acceptor != nullptr || closing.load(); });
  if (closing)
    return refuse("the incoming migration was stopped");
  listener = std::move(recover_acceptor);
  return destination_event::recover;
}

// The source comes back in the same session: told which owed pages are
// here, it answers go and sends the rest.
caf::expected<destination_event> migration_destination::impl::postcopy_recover() {
  FERRY_TRY(accepted, accept_main());
  (void) accepted;
  std::vector<uint8_t> buf;
  FERRY_TRY(h, check_hello(*main, buf));
  std::string refusal;
  if ((h.flags & mig::flag_resume) == 0)
    refusal = "a new migration cannot start while postcopy is paused: resume it";
  else if (h.session != hello.session)
    refusal = "the source resumes another migration (its session differs)";
  else if (h.ram_size != hello.ram_size)
    refusal = "the resuming source's RAM size differs";
  if (auto ok = main->send(mig::record_type::hello_ack,
                           mig::encode(mig::status_msg{refusal.empty() ? 0u : 1u, refusal}));
      !ok)
    return ok.error();
  if (!refusal.empty())
    return refuse(refusal);
  if (plan.preempt) {
    FERRY_TRY(p, accept_preempt(true));
    preempt = p;
  }
  if (auto ok = send_received(); !ok)
    return ok.error();
  FERRY_TRY(go, await_go());
  (void) go;
  {
    std::lock_guard lk{mtx};
    listener->stop_listening();
  }
  if (!hooks.step(migration_event::recovered))
    return refuse("the incoming migration was stopped");
  return destination_event::recovered;
}

// The owed pages placed so far: on a recovery (then ready: await_go sends
// it), and with release-ram every quarter second those placed since.
caf::expected<void> migration_destination::impl::send_received(dirty_bitmap* skip) {
  std::vector<uint64_t> words;
  for (size_t w0 = 0; w0 < awaited.word_count(); w0 += mig::max_discard_words) {
    const size_t end = std::min<size_t>(awaited.word_count(), w0 + mig::max_discard_words);
    words.assign(end - w0, 0);
    bool any = false;
    for (size_t w = w0; w < end; ++w)
      for (uint64_t bits = awaited.word(w) & ~(skip != nullptr ? skip->word(w) : 0); bits != 0;
           bits &= bits - 1) {
        const uint64_t p = w * 64 + static_cast<uint64_t>(__builtin_ctzll(bits));
        if (region->placed(p)) {
          words[w - w0] |= uint64_t{1} << (p % 64);
          any = true;
        }
      }
    if (!any)
      continue;
    if (skip != nullptr)
      skip->or_words(w0 * 64, words.data(),
                     std::min<uint64_t>(awaited.pages() - w0 * 64, (end - w0) * 64));
    if (auto ok =
          main->send(mig::record_type::postcopy_received, mig::encode_discard(w0 * 64, words));
        !ok)
      return ok;
  }
  return {};
}

// The figures of a page just placed, and the wait of whoever asked for it.
void migration_destination::impl::placed_one(const mig::postcopy_page& pg,
                                             clock_type::time_point now) {
  ++awaited_placed;
  if (blocktime)
    blocktime->placed(pg.pfn, now);
  (pg.zero ? ctr.zero_pages : ctr.normal_pages).fetch_add(1, std::memory_order_relaxed);
  std::lock_guard lk{wait_mtx};
  if (auto it = waiting.find(pg.pfn); it != waiting.end()) {
    const auto us = static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::microseconds>(now - it->second).count());
    if (request_latency_us.size() < (size_t{1} << 20))
      request_latency_us.push_back(static_cast<uint32_t>(std::min<uint64_t>(us, UINT32_MAX)));
    waiting.erase(it);
  }
}

// The `mig-fault` thread: each access to a missing page becomes a request
// for it on the return path (once); a missing page the source never owed was
// never written here — a zero page — and is placed at once.
void migration_destination::impl::watch_faults() {
  const auto registered = name_migration_thread(hooks.threads, "mig-fault");
  static const std::vector<uint8_t> zeros(mig::page_size, 0);
  const bool release = (hello.flags & mig::flag_release_ram) != 0;
  if (release && reported.pages() != awaited.pages())
    reported = dirty_bitmap{awaited.pages()};
  auto last_report = clock_type::now();
  while (!fault_stop) {
    if (release && clock_type::now() - last_report >= release_report_interval) {
      last_report = clock_type::now();
      if (auto ok = send_received(&reported); !ok) {
        note_failure(ok.error());
        return;
      }
    }
    auto f = region->next_fault(fault_poll);
    if (!f) {
      note_failure(f.error());
      return;
    }
    if (!*f)
      continue;
    const uint64_t pfn = (*f)->pfn;
    if (!awaited.test(pfn)) {
      if (auto ok = region->place(pfn, zeros.data()); !ok) {
        note_failure(ok.error());
        return;
      }
      continue;
    }
    if (blocktime)
      blocktime->faulted((*f)->tid, pfn, clock_type::now());
    if (region->placed(pfn)) {
      if (blocktime) // it arrived meanwhile: the wait is over
        blocktime->placed(pfn, clock_type::now());
      continue;
    }
    {
      std::lock_guard lk{wait_mtx};
      if (!waiting.emplace(pfn, clock_type::now()).second)
        continue; // asked for already
    }
    if (auto ok =
          main->send(mig::record_type::page_request, mig::encode(mig::page_request{pfn, 1}));
        !ok) {
      note_failure(ok.error());
      return;
    }
    ctr.postcopy_requests.fetch_add(1, std::memory_order_relaxed);
  }
}

} // namespace ferry
