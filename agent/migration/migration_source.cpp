#include "agent/migration/migration_source.hpp"

#include "agent/migration/engine_phase.hpp"

#include "agent/convergence/cpu_throttle.hpp"
#include "agent/convergence/dirty_limit.hpp"
#include "agent/migration/migration_counters.hpp"
#include "agent/migration/page_sender.hpp"
#include "agent/migration/rate_limiter.hpp"
#include "agent/transport/migration_channel.hpp"
#include "common/error.hpp"
#include "protocol/qmp_wire.hpp"

#include <boost/json.hpp>

#include <chrono>
#include <mutex>
#include <random>
#include <thread>

namespace ferry {

namespace json = boost::json;
using clock_type = std::chrono::steady_clock;

namespace {

// Pages are assigned to channels in stripes of this many 64-page words:
// 256 pages, one full batch.
constexpr size_t stripe_words = mig::max_batch_pages / 64;

uint64_t ms_since(clock_type::time_point t) {
  return static_cast<uint64_t>(
    std::chrono::duration_cast<std::chrono::milliseconds>(clock_type::now() - t).count());
}

std::array<uint8_t, 16> random_session() {
  std::random_device rd;
  std::array<uint8_t, 16> s{};
  for (auto& b : s)
    b = static_cast<uint8_t>(rd());
  return s;
}

caf::error cancelled_error() {
  return make_ferry_error(errc::bad_run_state, "migration cancelled");
}

} // namespace

struct migration_source::impl {
  guest& g;
  outgoing_migration plan;
  migration_hooks hooks;

  std::atomic<bool> stop{false};
  std::atomic<bool> cancelled{false};
  std::atomic<bool> resume{false};
  std::atomic<bool> in_switchover{false};
  rate_limiter limiter;
  std::atomic<uint64_t> downtime_limit_ms{300};
  std::atomic<uint64_t> avail_bw{0};
  std::atomic<uint64_t> xbzrle_cache_size{0};
  migration_counters ctr;

  mutable std::mutex mtx; // error, channels
  std::string error;
  std::vector<std::unique_ptr<migration_channel>> channels; // [0] = main
  std::vector<std::unique_ptr<page_sender>> senders;

  // Figures of the last pass, for query-migrate.
  std::atomic<uint64_t> remaining_bytes{0};
  std::atomic<uint64_t> dirty_pages_rate{0};
  std::atomic<uint64_t> bandwidth{0}; // bytes/s
  std::atomic<uint64_t> pages_per_second{0};
  // The pass in progress, so that query-migrate's remaining and mbps move
  // during a pass (a first pass over a large guest takes long) as QEMU's
  // do, instead of only at its end.
  std::atomic<bool> in_pass{false};
  std::atomic<int64_t> pass_start_ns{0};
  std::atomic<uint64_t> pass_sent_before{0};
  std::atomic<uint64_t> pass_todo_pages{0};
  std::atomic<uint64_t> pass_done_before{0};
  uint64_t pages_done() const {
    return ctr.normal_pages.load() + ctr.zero_pages.load() + ctr.xbzrle_pages.load();
  }
  // XBZRLE rates over the last pass (XBZRLECacheStats).
  std::atomic<double> xbzrle_miss_rate{0};
  std::atomic<double> xbzrle_encoding_rate{0};
  std::atomic<uint64_t> expected_downtime_ms{0};
  std::atomic<uint64_t> setup_ms{0};
  std::atomic<uint64_t> downtime_ms{0};
  std::atomic<uint64_t> total_ms{0};
  std::atomic<bool> finished{false};
  clock_type::time_point start = clock_type::now();

  guest::pause_guard paused;
  bool tracking = false;
  std::unique_ptr<cpu_throttle> throttle; // auto-converge, once it kicks in
  int dirty_rate_high = 0;
  std::atomic<unsigned> throttle_pct{0};
  std::atomic<bool> dirty_limit_on{false};
  uint64_t dirty_limit_set = 0; // the quota given to the vCPUs
  std::atomic<uint64_t> dirty_limit_quota{1};
  std::atomic<uint64_t> dirty_limit_period_ms{1000};
  dirty_bitmap holes;   // first pass: pages known zero (outlives the senders)
  dirty_bitmap todo{0}; // the pages the current pass sends
  uint64_t passes = 0;
  clock_type::time_point downtime_start;
  // Where the engine is; stepped by its own thread only (read by tests).
  std::atomic<source_phase> phase{source_phase::connect};
  std::thread thread;

  impl(guest& gu, outgoing_migration p, migration_hooks h)
    : g(gu), plan(std::move(p)), hooks(std::move(h)) {
    limiter.set_limit(plan.max_bandwidth);
    downtime_limit_ms = plan.downtime_limit_ms;
    avail_bw = plan.avail_switchover_bandwidth;
    xbzrle_cache_size = plan.xbzrle_cache_size;
    dirty_limit_quota = plan.dirty_limit_quota;
    dirty_limit_period_ms = plan.dirty_limit_period_ms;
  }

  void note_failure(const caf::error& e) {
    {
      std::lock_guard lk{mtx};
      if (error.empty() && !cancelled)
        error = describe(e);
    }
    halt();
  }

  void halt() {
    stop = true;
    std::lock_guard lk{mtx};
    for (auto& c : channels)
      c->interrupt();
  }

  uint64_t bytes_sent() const {
    std::lock_guard lk{mtx};
    uint64_t n = 0;
    for (const auto& c : channels)
      n += c->bytes_sent();
    return n;
  }

  caf::expected<void> check_stop() const {
    if (!stop)
      return {};
    if (cancelled)
      return cancelled_error();
    std::lock_guard lk{mtx};
    return make_ferry_error(errc::system_error, error);
  }

  void emit(const char* name, json::object data) {
    if (plan.events)
      hooks.emit(qmp::event(name, std::move(data)));
  }

  struct xbzrle_mark {
    uint64_t checked = 0;
    uint64_t misses = 0;
    uint64_t pages = 0;
    uint64_t bytes = 0;
  };
  xbzrle_mark xbzrle_now() const {
    return {ctr.xbzrle_checked, ctr.xbzrle_cache_miss, ctr.xbzrle_pages, ctr.xbzrle_bytes};
  }
  // cache-miss-rate and encoding-rate over the pass since `before`.
  void xbzrle_rates(const xbzrle_mark& before) {
    const xbzrle_mark now = xbzrle_now();
    if (now.checked > before.checked)
      xbzrle_miss_rate = static_cast<double>(now.misses - before.misses) /
                         static_cast<double>(now.checked - before.checked);
    if (now.bytes > before.bytes)
      xbzrle_encoding_rate = static_cast<double>((now.pages - before.pages) * mig::page_size) /
                             static_cast<double>(now.bytes - before.bytes);
  }

  // Milliseconds to send `dirty` pages with the guest stopped. QEMU divides
  // their raw size by the link's byte rate. From the second pass on, the
  // pass just done sent a dirty set like this one, so its page rate also
  // counts what zero pages, XBZRLE deltas and compression save; the lower
  // of the two is taken. avail-switchover-bandwidth is the user's word on
  // raw bytes and is used alone.
  uint64_t expected_downtime(uint64_t dirty, uint64_t pass) const {
    // Rounded up: only nothing left to send takes no time.
    auto ms_for = [](uint64_t amount, uint64_t per_second) {
      return (amount * 1000 + per_second - 1) / per_second;
    };
    const uint64_t raw = dirty * mig::page_size;
    if (avail_bw != 0)
      return ms_for(raw, avail_bw);
    if (bandwidth == 0)
      return UINT64_MAX;
    uint64_t ms = ms_for(raw, bandwidth);
    if (pass >= 2 && pages_per_second != 0)
      ms = std::min(ms, ms_for(dirty, pages_per_second));
    return ms;
  }

  void run();
  caf::expected<void> execute();
  caf::expected<source_event> run_phase(source_phase p);
  caf::expected<source_event> connect();
  caf::expected<source_event> setup();
  caf::expected<source_event> iterate();
  caf::expected<source_event> switchover();
  caf::expected<source_event> device_state();
  caf::expected<source_event> handover();
  caf::error check_stop_error() const {
    auto ok = check_stop();
    return ok ? make_ferry_error(errc::system_error, "the migration was stopped") : ok.error();
  }
  void maybe_throttle(uint64_t bytes_xfer, uint64_t bytes_dirty);
  caf::expected<void> handshake();
  caf::expected<void> send_bitmap(const dirty_bitmap& pages, uint64_t pass);
};

caf::expected<void> migration_source::impl::handshake() {
  // Each channel is registered before its first exchange, so cancel can cut
  // a stalled handshake.
  FERRY_TRY(main, plan.open ? plan.open() : open_outgoing(plan.target));
  {
    std::lock_guard lk{mtx};
    channels.push_back(std::move(main));
  }
  if (plan.tls)
    if (auto ok = channels[0]->start_tls(*plan.tls); !ok)
      return ok;
  mig::hello h;
  h.channel_count = plan.multifd ? static_cast<uint16_t>(plan.channels) : 0;
  h.session = random_session();
  h.flags = (plan.multifd ? mig::flag_multifd : 0) |
            (plan.validate_uuid ? mig::flag_validate_uuid : 0) |
            (plan.multifd ? static_cast<uint32_t>(plan.compress) << mig::compression_shift : 0);
  h.ram_size = g.memory().size();
  h.uuid = plan.uuid;
  if (auto ok = channels[0]->send(mig::record_type::hello, mig::encode(h)); !ok)
    return ok;
  if (plan.target.bidirectional()) {
    std::vector<uint8_t> buf;
    FERRY_TRY(rh, channels[0]->receive(buf));
    if (rh.type != mig::record_type::hello_ack)
      return make_ferry_error(errc::system_error, std::string{"destination answered "} +
                                                    mig::to_string(rh.type) +
                                                    " to the migration handshake");
    FERRY_TRY(st, mig::decode_status(buf));
    if (st.code != 0)
      return make_ferry_error(errc::invalid_argument,
                              "the destination refused the migration: " + st.text);
  }
  for (uint16_t i = 1; i <= h.channel_count; ++i) {
    if (stop)
      return check_stop();
    FERRY_TRY(opened, plan.open ? plan.open() : open_outgoing(plan.target));
    migration_channel* ch = opened.get();
    {
      std::lock_guard lk{mtx};
      channels.push_back(std::move(opened));
    }
    if (plan.tls)
      if (auto ok = ch->start_tls(*plan.tls); !ok)
        return ok;
    h.channel_index = i;
    if (auto ok = ch->send(mig::record_type::hello, mig::encode(h)); !ok)
      return ok;
  }
  auto on_error = [this](const caf::error& e) { note_failure(e); };
  page_sender::options opt{
    plan.detect_zero,    plan.multifd,
    hooks.threads,       plan.multifd ? plan.compress : mig::compression::none,
    plan.compress_level, plan.xbzrle ? plan.xbzrle_cache_size : 0};
  if (plan.multifd) {
    for (size_t i = 1; i < channels.size(); ++i)
      senders.push_back(std::make_unique<page_sender>("mig-send/" + std::to_string(i - 1),
                                                      *channels[i], g.memory(), opt, limiter, ctr,
                                                      stop, on_error));
  } else {
    senders.push_back(std::make_unique<page_sender>("mig-send", *channels[0], g.memory(), opt,
                                                    limiter, ctr, stop, on_error));
  }
  return {};
}

caf::expected<void> migration_source::impl::send_bitmap(const dirty_bitmap& pages, uint64_t pass) {
  std::vector<uint64_t> pfns;
  for (size_t w0 = 0; w0 < pages.word_count(); w0 += stripe_words) {
    if (stop)
      return check_stop();
    pfns.clear();
    for (size_t w = w0; w < std::min(w0 + stripe_words, pages.word_count()); ++w) {
      uint64_t bits = pages.word(w);
      while (bits != 0) {
        pfns.push_back(w * 64 + static_cast<uint64_t>(__builtin_ctzll(bits)));
        bits &= bits - 1;
      }
    }
    if (!pfns.empty())
      senders[(w0 / stripe_words) % senders.size()]->push_pages(pfns);
  }
  for (auto& s : senders)
    s->push_sync(pass);
  for (auto& s : senders)
    s->wait_idle();
  return check_stop();
}

caf::expected<source_event> migration_source::impl::run_phase(source_phase p) {
  switch (p) {
    case source_phase::connect:
      return connect();
    case source_phase::setup:
      return setup();
    case source_phase::iterate:
      return iterate();
    case source_phase::switchover:
      return switchover();
    case source_phase::device_state:
      return device_state();
    case source_phase::handover:
      return handover();
    default:
      return make_ferry_error(errc::bad_run_state, "no work in phase " + std::string{to_string(p)});
  }
}

// The engine walks its phases: each phase's work yields the event that moves
// it on; a failure becomes `error` (or `cancel` when it was cancelled).
caf::expected<void> migration_source::impl::execute() {
  source_phase p = source_phase::connect;
  while (!terminal(p)) {
    auto ev = run_phase(p);
    const source_event e = ev ? *ev : cancelled ? source_event::cancel : source_event::error;
    auto next = step(p, e);
    if (!next)
      return next.error(); // a phase produced an event its table forbids
    p = *next;
    phase = p;
    if (!ev)
      return ev.error();
  }
  return {};
}

caf::expected<source_event> migration_source::impl::connect() {
  if (auto ok = handshake(); !ok)
    return ok.error();
  return source_event::connected;
}

caf::expected<source_event> migration_source::impl::setup() {
  // Tracking starts before the first pass reads anything; what the tracker
  // has collected so far is dropped, since that pass sends every page.
  dirty_tracker& log = g.dirty_log();
  if (auto ok = log.start(); !ok)
    return ok.error();
  tracking = true;
  const uint64_t pages = g.memory().pages();
  todo = dirty_bitmap{pages};
  if (auto ok = log.sync(todo); !ok)
    return ok.error();
  setup_ms = ms_since(start);
  if (!hooks.step(migration_event::setup_done))
    return check_stop_error();
  todo.set_all();
  // Holes of the RAM file are zero and untouched: the first pass need not
  // read them (a read would allocate and clear each). A write to one after
  // tracking started shows in the next sync. With zero-page-detection none
  // every page goes with its data.
  holes = dirty_bitmap{pages};
  if (plan.detect_zero) {
    holes.set_all();
    g.memory().for_each_data_run([&](uint64_t first, uint64_t end) {
      for (uint64_t p = first; p < end; ++p)
        holes.clear_page(p);
    });
    for (auto& s : senders)
      s->set_known_zero(&holes);
  }
  return source_event::setup_done;
}

// One pass over `todo`; then the next dirty set and whether it fits.
caf::expected<source_event> migration_source::impl::iterate() {
  const uint64_t pass = ++passes;
  const auto pass_start = clock_type::now();
  const uint64_t sent_before = bytes_sent();
  const uint64_t pass_pages = todo.count();
  const xbzrle_mark xbz_before = xbzrle_now();
  if (plan.xbzrle && pass >= 2)
    for (auto& s : senders)
      s->use_xbzrle(xbzrle_cache_size / senders.size());
  pass_sent_before = sent_before;
  pass_todo_pages = pass_pages;
  pass_done_before = pages_done();
  pass_start_ns = pass_start.time_since_epoch().count();
  in_pass = true;
  auto sent = send_bitmap(todo, pass);
  in_pass = false;
  if (!sent)
    return sent.error();
  xbzrle_rates(xbz_before);
  for (auto& s : senders)
    s->set_known_zero(nullptr);
  const double secs = std::chrono::duration<double>(clock_type::now() - pass_start).count();
  if (secs >= 0.001) {
    bandwidth = static_cast<uint64_t>(static_cast<double>(bytes_sent() - sent_before) / secs);
    pages_per_second = static_cast<uint64_t>(static_cast<double>(pass_pages) / secs);
  }
  todo.clear();
  if (auto ok = g.dirty_log().sync(todo); !ok)
    return ok.error();
  const uint64_t syncs = ++ctr.sync_count;
  emit("MIGRATION_PASS", json::object{{"pass", syncs}});
  const uint64_t dirty = todo.count();
  remaining_bytes = dirty * mig::page_size;
  if ((plan.auto_converge || plan.dirty_limit) && pass >= 2)
    maybe_throttle(bytes_sent() - sent_before, dirty * mig::page_size);
  const double since_start = std::chrono::duration<double>(clock_type::now() - pass_start).count();
  dirty_pages_rate =
    since_start > 0 ? static_cast<uint64_t>(static_cast<double>(dirty) / since_start) : 0;
  const uint64_t expected = expected_downtime(dirty, pass);
  expected_downtime_ms = expected;
  if (expected <= downtime_limit_ms)
    return source_event::pass_converged;
  if (stop)
    return check_stop_error();
  return source_event::pass_again;
}

// Stop-and-copy: the guest stops, the last dirty pages go at full speed.
caf::expected<source_event> migration_source::impl::switchover() {
  const bool was_running = g.state() == run_state::running;
  paused = g.pause();
  ctr.guest_stopped = true;
  in_switchover = true;
  limiter.set_limit(0);
  downtime_start = clock_type::now();
  if (was_running)
    hooks.emit(qmp::event("STOP"));
  dirty_tracker& log = g.dirty_log();
  if (auto ok = log.sync(todo); !ok)
    return ok.error();
  ++ctr.sync_count;
  if (auto ok = send_bitmap(todo, ctr.sync_count); !ok)
    return ok.error();
  remaining_bytes = 0;
  log.stop();
  tracking = false;

  if (plan.pause_before_switchover) {
    if (!hooks.step(migration_event::pause_switchover))
      return check_stop_error();
    while (!resume && !stop)
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    if (stop)
      return check_stop_error();
  }
  if (plan.multifd) {
    for (auto& s : senders)
      s->push_end();
    for (auto& s : senders)
      s->wait_idle();
    if (stop)
      return check_stop_error();
  }
  senders.clear();
  return source_event::dirty_sent;
}

caf::expected<source_event> migration_source::impl::device_state() {
  auto& main = *channels[0];
  FERRY_TRY(cpu, g.save_cpu_state());
  if (auto ok = main.send(mig::record_type::cpu_state, cpu); !ok)
    return ok.error();
  // No emulated device holds state yet (serial output is write-only, port
  // 0x92 is stateless): the section says so, with a device count of 0.
  const uint8_t no_devices[4] = {0, 0, 0, 0};
  if (auto ok = main.send(mig::record_type::devices, no_devices); !ok)
    return ok.error();
  if (auto ok = main.send(mig::record_type::end, std::span<const uint8_t>{}); !ok)
    return ok.error();
  ctr.add_sent(3 * mig::header_size + cpu.size() + sizeof no_devices, false);
  return source_event::state_sent;
}

// The destination has everything: it says ready, the owner takes the stopped
// guest, and only then does the destination hear go.
caf::expected<source_event> migration_source::impl::handover() {
  auto& main = *channels[0];
  if (!plan.target.bidirectional()) {
    if (auto ok = main.finish(); !ok)
      return ok.error();
  } else {
    std::vector<uint8_t> buf;
    FERRY_TRY(rh, main.receive(buf));
    FERRY_TRY(st, mig::decode_status(buf));
    if (rh.type != mig::record_type::ready || st.code != 0)
      return make_ferry_error(errc::system_error,
                              "the destination failed to load the guest: " + st.text);
  }
  downtime_ms = ms_since(downtime_start);
  total_ms = ms_since(start);
  if (!hooks.complete(paused)) {
    // Cancelled at the last moment: the destination must not start it.
    (void) main.send(mig::record_type::abort, mig::encode(mig::status_msg{1, "cancelled"}));
    cancelled = true;
    return cancelled_error();
  }
  if (plan.target.bidirectional())
    (void) main.send(mig::record_type::go, mig::encode(mig::status_msg{}));
  return source_event::destination_ready;
}

void migration_source::impl::maybe_throttle(uint64_t bytes_xfer, uint64_t bytes_dirty) {
  // QEMU's rule: the guest dirtied more than the threshold share of what
  // went over the link, twice in a row.
  const uint64_t threshold = bytes_xfer * plan.throttle_trigger_threshold / 100;
  if (bytes_dirty <= threshold || ++dirty_rate_high < 2)
    return;
  dirty_rate_high = 0;
  if (plan.dirty_limit) {
    // dirty-limit instead of auto-converge: every vCPU gets the quota, once
    // (again only if vcpu-dirty-limit changed), as QEMU does.
    const uint64_t quota = dirty_limit_quota;
    if (!dirty_limit_on || quota != dirty_limit_set) {
      plan.dirty_limit->set_period(dirty_limit_period_ms);
      plan.dirty_limit->set(std::nullopt, quota);
      dirty_limit_set = quota;
      dirty_limit_on = true;
    }
    return;
  }
  unsigned pct = plan.cpu_throttle_initial;
  if (throttle && throttle->percentage() > 0) {
    const unsigned now = throttle->percentage();
    unsigned inc = plan.cpu_throttle_increment;
    if (plan.cpu_throttle_tailslow) {
      // Just enough to bring dirtying down to the threshold, if that is less.
      const double cpu_now = 100.0 - now;
      const double cpu_ideal =
        cpu_now * static_cast<double>(threshold) / static_cast<double>(bytes_dirty);
      inc = std::min(inc, static_cast<unsigned>(cpu_now - cpu_ideal));
    }
    pct = now + inc;
  }
  pct = std::min(pct, plan.max_cpu_throttle);
  if (!throttle)
    throttle = std::make_unique<cpu_throttle>(g);
  throttle->set(pct);
  throttle_pct = pct;
}

void migration_source::impl::run() {
  auto ok = [this] {
    const auto registered = name_migration_thread(hooks.threads, "mig-source");
    return execute();
  }();
  if (!ok) {
    note_failure(ok.error());
    senders.clear();
  }
  if (tracking)
    g.dirty_log().stop();
  throttle.reset(); // full speed again (or stopped, after completion)
  if (dirty_limit_on) {
    plan.dirty_limit->set(std::nullopt, 0); // as QEMU: the limit ends with the migration
    dirty_limit_on = false;
  }
  if (ok) {
    finished = true;
    return;
  }
  total_ms = ms_since(start);
  // The source keeps its guest: running again if the migration stopped it.
  if (paused) {
    paused = {};
    if (g.state() == run_state::running)
      hooks.emit(qmp::event("RESUME"));
  }
  {
    std::lock_guard lk{mtx};
    channels.clear();
  }
  finished = true;
  if (cancelled || !hooks.step(migration_event::fail))
    hooks.step(migration_event::cancel_done);
}

migration_source::migration_source(guest& g, outgoing_migration plan, migration_hooks hooks)
  : impl_(std::make_unique<impl>(g, std::move(plan), std::move(hooks))) {
  impl_->thread = std::thread{[p = impl_.get()] { p->run(); }};
}

migration_source::~migration_source() {
  cancel();
  impl_->thread.join();
}

source_phase migration_source::phase() const {
  return impl_->phase.load();
}

void migration_source::cancel() {
  if (impl_->finished)
    return;
  impl_->cancelled = true;
  impl_->halt();
}

void migration_source::resume_switchover() {
  impl_->resume = true;
}

void migration_source::set_parameters(const live_parameters& p) {
  if (!impl_->in_switchover)
    impl_->limiter.set_limit(p.max_bandwidth);
  impl_->downtime_limit_ms = p.downtime_limit_ms;
  impl_->avail_bw = p.avail_switchover_bandwidth;
  impl_->xbzrle_cache_size = p.xbzrle_cache_size;
  impl_->dirty_limit_quota = p.dirty_limit_quota;
  impl_->dirty_limit_period_ms = p.dirty_limit_period_ms;
  if (impl_->dirty_limit_on)
    impl_->plan.dirty_limit->set_period(p.dirty_limit_period_ms);
}

void migration_source::fill_info(migration_status s, json::object& info) const {
  const impl& p = *impl_;
  const bool done = s == migration_status::completed || s == migration_status::failed ||
                    s == migration_status::cancelled;
  info["total-time"] = done && p.finished ? p.total_ms.load() : ms_since(p.start);
  if (s != migration_status::setup)
    info["setup-time"] = p.setup_ms.load();
  if (s == migration_status::active || s == migration_status::pre_switchover ||
      s == migration_status::device) {
    const uint64_t e = p.expected_downtime_ms;
    info["expected-downtime"] = e == UINT64_MAX ? p.downtime_limit_ms.load() : e;
  }
  if (s == migration_status::completed)
    info["downtime"] = p.downtime_ms.load();
  if (p.throttle_pct != 0 && migration_running(s))
    info["cpu-throttle-percentage"] = p.throttle_pct.load();
  if (p.dirty_limit_on && migration_running(s)) {
    info["dirty-limit-throttle-time-per-round"] = p.plan.dirty_limit->throttle_time_per_round_us();
    info["dirty-limit-ring-full-time"] = p.plan.dirty_limit->ring_full_time_us();
  }
  const uint64_t transferred = p.ctr.precopy_bytes + p.ctr.downtime_bytes;
  migration_figures f;
  f.transferred = transferred;
  f.remaining = p.remaining_bytes;
  f.total = p.g.memory().size();
  f.bandwidth = p.bandwidth;
  if (p.in_pass) {
    const auto start = clock_type::time_point{clock_type::duration{p.pass_start_ns.load()}};
    const double secs = std::chrono::duration<double>(clock_type::now() - start).count();
    const uint64_t now_done = p.pages_done();
    const uint64_t sent_pages = now_done - std::min(now_done, p.pass_done_before.load());
    f.remaining =
      (p.pass_todo_pages - std::min(p.pass_todo_pages.load(), sent_pages)) * mig::page_size;
    // Over at least 100 ms (QEMU's update period), else the last pass's.
    if (secs >= 0.1) {
      const uint64_t now_sent = p.bytes_sent();
      f.bandwidth = static_cast<uint64_t>(
        static_cast<double>(now_sent - std::min(now_sent, p.pass_sent_before.load())) / secs);
    }
  }
  f.dirty_pages_rate = p.dirty_pages_rate;
  f.pages_per_second = p.pages_per_second;
  info["ram"] = migration_stats_json(p.ctr, f);
  if (p.plan.xbzrle)
    info["xbzrle-cache"] = json::object{
      {"cache-size", p.xbzrle_cache_size.load()},
      {"bytes", p.ctr.xbzrle_bytes.load()},
      {"pages", p.ctr.xbzrle_pages.load()},
      {"cache-miss", p.ctr.xbzrle_cache_miss.load()},
      {"cache-miss-rate", p.xbzrle_miss_rate.load()},
      {"encoding-rate", p.xbzrle_encoding_rate.load()},
      {"overflow", p.ctr.xbzrle_overflow.load()},
    };
  if (s == migration_status::failed) {
    std::lock_guard lk{p.mtx};
    info["error-desc"] = p.error;
  }
}

} // namespace ferry
