// The receiving engine: its phases, pages and state applied, the hand-over
// (admitting the source's channels: destination_channels.cpp).
#include "agent/migration/migration_destination.hpp"

#include "agent/migration/destination_impl.hpp"
#include "protocol/shared_ram_check.hpp"

#include <boost/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <optional>
#include <thread>

namespace ferry {

namespace json = boost::json;

void migration_destination::impl::mark_present_data() {
  const auto mark = [&](uint64_t first, uint64_t end) {
    for (uint64_t p = first; p < end; ++p)
      maybe_nonzero[p / 64].fetch_or(1ull << (p % 64), std::memory_order_relaxed);
  };
  // Fresh RAM being prefilled reads as data to the scan, yet is zero but
  // for what the agent wrote into it.
  if (!g.memory().take_fresh_runs(mark))
    g.memory().for_each_data_run(mark);
}

caf::expected<mig::hello> migration_destination::impl::check_hello(migration_channel& ch,
                                                                   std::vector<uint8_t>& buf) {
  FERRY_TRY(h, ch.receive(buf));
  if (h.type != mig::record_type::hello)
    return refuse(std::string{"expected a hello record, got "} + mig::to_string(h.type));
  return mig::decode_hello(buf);
}

// The digest takes each applied page as guest memory now holds it.
void migration_destination::impl::note_applied(uint64_t pfn, bool zero) {
  uint8_t* page = g.memory().bytes().data() + pfn * mig::page_size;
  if (plan.after_apply)
    plan.after_apply(pfn, page);
  digest.set(pfn, zero && mig::is_zero_page(page) ? mig::zero_page_hash() : mig::page_hash(page));
}

caf::expected<void> migration_destination::impl::apply(std::span<const uint8_t> payload) {
  FERRY_TRY(b, mig::decode_pages(payload, g.memory().pages()));
  mig::apply_pages(b, g.memory().bytes(), maybe_nonzero);
  applied(b);
  return {};
}

caf::expected<void> migration_destination::impl::receive_pages(migration_channel& ch,
                                                               const mig::record_header& h,
                                                               std::vector<uint8_t>& head) {
  // Prefix and entries first, checked, then each run of neighbouring pages
  // in one read at its place in guest RAM. A record that turns out corrupt
  // (its CRC) has written into RAM the guest never runs from: the incoming
  // migration fails.
  head.resize(std::min<size_t>(h.length, mig::batch_prefix));
  if (auto ok = ch.read_payload(head.data(), head.size()); !ok)
    return ok;
  FERRY_TRY(head_size, mig::page_batch_head_size(head));
  if (h.length < head_size)
    return mig::decode_page_head(head, h.length, g.memory().pages()).error();
  head.resize(head_size);
  if (auto ok = ch.read_payload(head.data() + mig::batch_prefix, head_size - mig::batch_prefix);
      !ok)
    return ok;
  FERRY_TRY(b, mig::decode_page_head(head, h.length, g.memory().pages()));
  uint8_t* ram = g.memory().bytes().data();
  uint8_t* run = nullptr;
  size_t run_len = 0;
  for (uint32_t i = 0; i < b.count; ++i) {
    uint64_t e = 0;
    std::memcpy(&e, b.entries.data() + size_t{i} * 8, 8);
    if ((e & mig::zero_page_bit) != 0)
      continue;
    uint8_t* dst = ram + e * mig::page_size;
    if (run != nullptr && run + run_len == dst) {
      run_len += mig::page_size;
      continue;
    }
    if (run != nullptr)
      if (auto ok = ch.read_payload(run, run_len, true); !ok)
        return ok;
    run = dst;
    run_len = mig::page_size;
  }
  if (run != nullptr)
    if (auto ok = ch.read_payload(run, run_len, true); !ok)
      return ok;
  if (auto ok = ch.end_payload(h); !ok)
    return ok;
  mig::apply_pages(b, g.memory().bytes(), maybe_nonzero, true);
  applied(b);
  return {};
}

// The digest and the counters take a batch now in guest RAM.
void migration_destination::impl::applied(const mig::page_batch& b) {
  for (uint32_t i = 0; i < b.count; ++i) {
    uint64_t e = 0;
    std::memcpy(&e, b.entries.data() + size_t{i} * 8, 8);
    note_applied(e & ~mig::zero_page_bit, (e & mig::zero_page_bit) != 0);
  }
  ctr.normal_pages.fetch_add(b.count - b.zero_pages, std::memory_order_relaxed);
  ctr.zero_pages.fetch_add(b.zero_pages, std::memory_order_relaxed);
}

caf::expected<void> migration_destination::impl::apply_deltas(std::span<const uint8_t> payload) {
  FERRY_TRY(b, mig::decode_xbzrle(payload, g.memory().pages()));
  mig::apply_xbzrle(b, g.memory().bytes(), maybe_nonzero);
  // Entries: u64 page, u32 length, the delta (checked by decode_xbzrle).
  for (size_t at = 0, i = 0; i < b.count; ++i) {
    uint64_t pfn = 0;
    uint32_t len = 0;
    std::memcpy(&pfn, b.body.data() + at, 8);
    std::memcpy(&len, b.body.data() + at + 8, 4);
    at += 12 + len;
    note_applied(pfn, false);
  }
  ctr.normal_pages.fetch_add(b.count, std::memory_order_relaxed);
  return {};
}

caf::expected<void> migration_destination::impl::receive_channel(migration_channel& ch) {
  std::vector<uint8_t> buf;
  std::vector<uint8_t> plain;
  for (;;) {
    FERRY_TRY(h, ch.receive_header());
    const bool pages = h.type == mig::record_type::pages || h.type == mig::record_type::live_pages;
    if (pages && compress != mig::compression::none)
      return refuse("plain page record on a compressed multifd channel");
    if (pages) {
      if (auto ok = receive_pages(ch, h, buf); !ok)
        return ok;
      continue;
    }
    if (auto ok = ch.receive_payload(h, buf); !ok)
      return ok;
    switch (h.type) {
      case mig::record_type::compressed_pages:
        if (auto ok = mig::decompress_pages(compress, buf, plain); !ok)
          return ok;
        if (auto ok = apply(plain); !ok)
          return ok;
        break;
      case mig::record_type::sync: {
        auto n = mig::decode_sync(buf);
        if (!n)
          return n.error();
        ctr.sync_count = *n; // every channel carries the same passes
        break;
      }
      case mig::record_type::end:
        return {};
      default:
        return refuse(std::string{"unexpected "} + mig::to_string(h.type) +
                      " record on a multifd channel");
    }
  }
}

caf::expected<destination_event> migration_destination::impl::run_phase(destination_phase p) {
  switch (p) {
    case destination_phase::listen:
      return accept_main();
    case destination_phase::handshake:
      return handshake();
    case destination_phase::channels: {
      auto ev = open_channels();
      // Every channel is in (or none will come): give the address back.
      listener->stop_listening();
      return ev;
    }
    case destination_phase::receive:
      if (plan.mapped_ram)
        if (auto ok = load_mapped_pages(); !ok)
          return ok.error();
      return receive_main();
    case destination_phase::load_state:
      return load_state();
    case destination_phase::handover:
      return await_go();
    case destination_phase::postcopy_load:
      return postcopy_load();
    case destination_phase::postcopy:
      return receive_postcopy();
    case destination_phase::postcopy_paused:
      return postcopy_paused();
    case destination_phase::postcopy_recover:
      return postcopy_recover();
    case destination_phase::colo:
      return colo();
    default:
      return refuse("no work in phase " + std::string{to_string(p)});
  }
}

// The engine walks its phases; any failure fails the incoming migration, with
// every receiving thread joined first.
caf::expected<void> migration_destination::impl::execute() {
  destination_phase p = destination_phase::listen;
  caf::expected<void> result{};
  while (!terminal(p)) {
    auto ev = run_phase(p);
    // Once the guest runs here, a failure (but the owner's ending it)
    // pauses the postcopy instead: the guest waits for its pages.
    destination_event e = ev ? *ev : destination_event::error;
    if (!ev && guest_runs_here && !closing)
      e = destination_event::link_lost;
    auto next = step(p, e);
    if (!next) {
      result = next.error();
      break;
    }
    p = *next;
    phase = p;
    if (e == destination_event::link_lost) {
      after_link_lost(ev.error());
      continue;
    }
    if (!ev) {
      note_failure(ev.error());
      result = ev.error();
      break;
    }
  }
  join_receivers();
  join_preempt();
  return result;
}

// One record of the main channel: pages without multifd, CPU and device
// state, the end. False when the stream ended.
caf::expected<bool> migration_destination::impl::main_record(const mig::record_header& h,
                                                             const std::vector<uint8_t>& buf) {
  switch (h.type) {
    case mig::record_type::pages:
      if (multifd)
        return refuse("page record on the main channel of a multifd migration");
      if (auto ok = apply(buf); !ok)
        return ok.error();
      return true;
    case mig::record_type::xbzrle_pages:
      // XBZRLE and multifd exclude each other (migrate-set-capabilities).
      if (multifd)
        return refuse("XBZRLE record on the main channel of a multifd migration");
      if (auto ok = apply_deltas(buf); !ok)
        return ok.error();
      return true;
    case mig::record_type::sync: {
      FERRY_TRY(n, mig::decode_sync(buf));
      ctr.sync_count = n;
      return true;
    }
    case mig::record_type::cpu_state:
      cpu = buf;
      return true;
    case mig::record_type::devices: {
      auto d = mig::decode_devices(buf);
      if (!d)
        return refuse(describe(d.error()));
      source_running = d->guest_running;
      devices = true;
      return true;
    }
    case mig::record_type::digest: {
      FERRY_TRY(d, mig::decode_digest(buf));
      source_digest = d;
      return true;
    }
    case mig::record_type::shared_ram:
      if (auto ok = check_shared_ram(buf); !ok)
        return ok.error();
      return true;
    case mig::record_type::end:
      return false;
    case mig::record_type::discard:
      if (!postcopy)
        return refuse("discard record without postcopy-ram");
      if (auto ok = note_discard(buf); !ok)
        return ok.error();
      return true;
    case mig::record_type::postcopy_run: {
      if (!postcopy)
        return refuse("postcopy-run record without postcopy-ram");
      FERRY_TRY(n, mig::decode_postcopy_run(buf));
      awaited_count = n;
      postcopy_run_seen = true;
      return false; // postcopy-pages follow, read in the postcopy phase
    }
    case mig::record_type::abort: {
      auto st = mig::decode_status(buf);
      return refuse("the source aborted the migration" + (st ? ": " + st->text : std::string{}));
    }
    default:
      return refuse(std::string{"unexpected "} + mig::to_string(h.type) +
                    " record on the main channel");
  }
}

caf::expected<destination_event> migration_destination::impl::receive_main() {
  std::vector<uint8_t> buf;
  for (bool more = true; more;) {
    FERRY_TRY(h, main->receive_header());
    if (h.type == mig::record_type::pages && !multifd) {
      if (auto ok = receive_pages(*main, h, buf); !ok)
        return ok.error();
      continue;
    }
    if (auto ok = main->receive_payload(h, buf); !ok)
      return ok.error();
    FERRY_TRY(again, main_record(h, buf));
    more = again;
  }
  join_receivers();
  if (stop) {
    std::lock_guard lk{mtx};
    return refuse(error);
  }
  return postcopy_run_seen ? destination_event::postcopy_switch : destination_event::stream_ended;
}

caf::expected<destination_event> migration_destination::impl::load_state() {
  if (cpu.empty() || !devices)
    return refuse("the stream ended without the guest's CPU and device state");
  if ((hello.flags & mig::flag_ignore_shared) != 0 && !shared_checked)
    return refuse("x-ignore-shared: the stream ended without its shared-ram record");
  if (auto ok = check_digest(); !ok)
    return ok.error();
  if (auto ok = g.load_cpu_state(cpu); !ok)
    return ok.error();
  whole_guest = true;
  if (plan.colo)
    return colo_begin();
  return destination_event::state_loaded;
}

// x-ignore-shared: the source's samples of its stopped guest's RAM against
// the file mapped here.
caf::expected<void> migration_destination::impl::check_shared_ram(const std::vector<uint8_t>& buf) {
  if ((hello.flags & mig::flag_ignore_shared) == 0)
    return refuse("shared-ram record without x-ignore-shared");
  auto samples = mig::decode_shared_ram(buf, g.memory().pages());
  if (!samples)
    return refuse(describe(samples.error()));
  std::array<uint8_t, mig::page_size> page{};
  for (const auto& s : *samples) {
    if (auto ok = g.memory().read_shared_page(s.pfn, page.data()); !ok)
      return ok.error();
    if (mig::page_hash(page.data()) != s.hash)
      return refuse("x-ignore-shared: guest RAM here is not the source's (page " +
                    std::to_string(s.pfn) +
                    " of the shared file differs): another file, or one changed since");
  }
  shared_checked = true;
  return {};
}

// The proof: this side holds exactly what the source sent, page by page.
caf::expected<void> migration_destination::impl::check_digest() {
  if (!source_digest)
    return refuse("the stream ended without the switchover digest");
  if (*source_digest == digest.value())
    return {};
  char text[160];
  std::snprintf(text, sizeof text,
                "%.*s: the pages here differ from what the source sent "
                "(source %016llx, here %016llx)",
                static_cast<int>(mig::digest_mismatch_phrase.size()),
                mig::digest_mismatch_phrase.data(), static_cast<unsigned long long>(*source_digest),
                static_cast<unsigned long long>(digest.value()));
  // The source hears why instead of a closed link, and keeps its guest;
  // the channels stay open until it has read it (it closes them), for a
  // second at most.
  if (plan.from.bidirectional() &&
      main->send(mig::record_type::ready, mig::encode(mig::status_msg{1, text})))
    (void) main->wait_readable(1000);
  return refuse(text);
}

caf::expected<destination_event> migration_destination::impl::await_go() {
  if (plan.from.bidirectional()) {
    std::vector<uint8_t> buf;
    if (auto ok = main->send(mig::record_type::ready, mig::encode(mig::status_msg{})); !ok)
      return ok.error();
    // The source answers ready at once. A silent one may have died after
    // sending everything: this copy may be the only one, so it stays here,
    // paused, for the orchestrator (or operator) to decide; it never starts
    // on its own.
    const auto limit = migration_link_timeout();
    const auto deadline = clock_type::now() + limit;
    while (limit.count() > 0 && !stop && !main->wait_readable(100))
      if (clock_type::now() > deadline)
        return refuse("no go from the source within " + std::to_string(limit.count()) +
                      " ms after the guest arrived: it stays here, paused");
    FERRY_TRY(h, main->receive(buf));
    if (h.type != mig::record_type::go)
      return refuse("the source cancelled the migration at switchover");
  }
  return destination_event::go;
}

void migration_destination::impl::run() {
  auto ok = [this] {
    const auto registered = name_migration_thread(hooks.threads, "mig-incoming");
    return execute();
  }();
  total_ms = static_cast<uint64_t>(
    std::chrono::duration_cast<std::chrono::milliseconds>(clock_type::now() - start).count());
  {
    std::lock_guard lk{mtx};
    for (const auto& ch : channels)
      received_closed += ch->bytes_received();
    channels.clear();
  }
  if (!ok) {
    {
      std::lock_guard lk{mtx};
      if (error.empty())
        error = describe(ok.error());
    }
    stop_fault_thread();
    // The guest runs here and waits for pages the source still holds: its
    // RAM stays watched (a thread touching a missing page waits), and the
    // migration pauses instead of failing (QEMU's postcopy-paused).
    if (guest_runs_here) {
      hooks.step(migration_event::postcopy_broken);
      return;
    }
    hooks.step(migration_event::fail);
    return;
  }
  // The owner starts the guest (unless -S) as the state reaches completed —
  // also a COLO secondary that took over.
  hooks.step(colo_took_over ? migration_event::colo_failover : migration_event::complete);
}

caf::expected<std::unique_ptr<migration_destination>>
migration_destination::listen(guest& g, incoming_migration plan, migration_hooks hooks) {
  FERRY_TRY(l, migration_listener::create(plan.from));
  plan.from = l->address();
  return start(g, std::move(plan), std::move(hooks), std::move(l));
}

std::unique_ptr<migration_destination>
migration_destination::start(guest& g, incoming_migration plan, migration_hooks hooks,
                             std::unique_ptr<channel_acceptor> acceptor) {
  auto p = std::make_unique<impl>(g, std::move(plan), std::move(hooks));
  p->listener = std::move(acceptor);
  p->mark_present_data();
  std::unique_ptr<migration_destination> d{new migration_destination(std::move(p))};
  d->impl_->thread = std::thread{[p = d->impl_.get()] { p->run(); }};
  return d;
}

migration_destination::migration_destination(std::unique_ptr<impl> p) : impl_(std::move(p)) {}

migration_destination::~migration_destination() {
  cancel("agent shutting down");
  impl_->thread.join();
}

void migration_destination::cancel(const std::string& why) {
  impl_->closing = true;
  impl_->note_failure(make_ferry_error(errc::bad_run_state, why));
  std::lock_guard lk{impl_->mtx}; // a paused postcopy waits on this
  impl_->recover_cv.notify_all();
}

void migration_destination::pause_postcopy() {
  impl_->note_failure(make_ferry_error(errc::bad_run_state, "paused by migrate-pause"));
}

void migration_destination::recover(std::unique_ptr<channel_acceptor> acceptor) {
  std::lock_guard lk{impl_->mtx};
  impl_->recover_acceptor = std::move(acceptor);
  impl_->recover_cv.notify_all();
}

bool migration_destination::holds_whole_guest() const {
  return impl_->whole_guest.load();
}

bool migration_destination::source_was_running() const {
  return impl_->source_running.load();
}

destination_phase migration_destination::phase() const {
  return impl_->phase.load();
}

const migration_address& migration_destination::address() const {
  return impl_->plan.from;
}

void migration_destination::fill_info(migration_status s, json::object& info) const {
  const impl& p = *impl_;
  if (p.plan.from.bidirectional() && s == migration_status::setup)
    info["socket-address"] = json::array{socket_address_json(p.plan.from)};
  if (s == migration_status::none || s == migration_status::setup)
    return;
  if (s == migration_status::completed || s == migration_status::failed)
    info["total-time"] = p.total_ms.load();
  uint64_t received = p.received_closed;
  {
    std::lock_guard lk{p.mtx};
    for (const auto& c : p.channels)
      received += c->bytes_received();
  }
  // What arrived; the rates are the source's to measure.
  migration_figures f;
  f.transferred = received;
  f.total = p.g.memory().size();
  info["ram"] = migration_stats_json(p.ctr, f);
  if (p.blocktime) {
    info["postcopy-blocktime"] = p.blocktime->all_blocked_ms();
    json::array per_vcpu;
    for (uint32_t ms : p.blocktime->per_vcpu_ms())
      per_vcpu.push_back(ms);
    info["postcopy-vcpu-blocktime"] = std::move(per_vcpu);
  }
  if (s == migration_status::failed) {
    std::lock_guard lk{p.mtx};
    info["error-desc"] = p.error;
  }
}

} // namespace ferry
