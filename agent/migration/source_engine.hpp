#pragma once
// The outgoing engine's insides, shared by its files: migration_source.cpp
// (the thread, cancel, live parameters, query-migrate's figures),
// source_phases.cpp (the phases and what they send) and
// source_convergence.cpp (auto-converge and dirty-limit). Internal to
// agent/migration/.

#include "agent/convergence/cpu_throttle.hpp"
#include "agent/convergence/dirty_limit.hpp"
#include "agent/migration/engine_phase.hpp"
#include "agent/migration/migration_counters.hpp"
#include "agent/migration/migration_source.hpp"
#include "agent/migration/page_sender.hpp"
#include "agent/migration/rate_limiter.hpp"
#include "agent/transport/migration_channel.hpp"
#include "agent/vmm/write_protect_region.hpp"
#include "common/error.hpp"
#include "common/unique_fd.hpp"
#include "protocol/colo_records.hpp"
#include "protocol/mapped_ram_file.hpp"
#include "protocol/page_digest.hpp"
#include "protocol/postcopy_records.hpp"
#include "protocol/prometheus_text.hpp"
#include "protocol/qmp_wire.hpp"

#include <boost/json.hpp>

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <optional>
#include <random>
#include <thread>

namespace ferry {

using clock_type = std::chrono::steady_clock;

// Pages are assigned to channels in stripes of this many 64-page words:
// 256 pages, one full batch.
inline constexpr size_t stripe_words = mig::max_batch_pages / 64;

inline uint64_t ms_since(clock_type::time_point t) {
  return static_cast<uint64_t>(
    std::chrono::duration_cast<std::chrono::milliseconds>(clock_type::now() - t).count());
}

inline std::array<uint8_t, 16> random_session() {
  std::random_device rd;
  std::array<uint8_t, 16> s{};
  for (auto& b : s)
    b = static_cast<uint8_t>(rd());
  return s;
}

inline caf::error cancelled_error() {
  return make_ferry_error(errc::bad_run_state, "migration cancelled");
}

struct migration_source::impl {
  guest& g;
  outgoing_migration plan;
  migration_hooks hooks;

  std::atomic<bool> stop{false};
  std::atomic<bool> cancelled{false};
  std::atomic<bool> resume{false};
  std::atomic<bool> in_switchover{false};
  std::atomic<bool> postcopy_requested{false}; // migrate-start-postcopy
  // Postcopy's go went out: the guest is the destination's from here on,
  // and this (stale) copy never runs again.
  bool postcopy_committed = false;
  rate_limiter limiter;
  std::atomic<uint64_t> downtime_limit_ms{300};
  std::atomic<uint64_t> avail_bw{0};
  std::atomic<uint64_t> xbzrle_cache_size{0};
  migration_counters ctr;
  // What the stream carried, page by page: sent at switchover for the
  // destination to compare.
  mig::memory_digest digest{g.memory().pages()};

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
  // background-snapshot: the protection, the CPU state at the start, which
  // pages are saved, the fault thread's copies waiting to be sent (bounded:
  // the thread holds the writer when full), the batch being built.
  std::unique_ptr<write_protect_region> wp;
  std::vector<uint8_t> bg_cpu;
  std::vector<std::atomic<uint64_t>> bg_saved;
  std::thread wp_thread;
  std::atomic<bool> wp_stop{false};
  std::mutex bg_mtx;
  std::condition_variable bg_cv;
  std::vector<uint64_t> bg_queue_pfns;
  std::vector<uint8_t> bg_queue_data;
  std::vector<uint64_t> bg_entries;
  std::vector<uint8_t> bg_data;
  caf::error bg_error;
  bool guest_was_running = true; // at switchover: the destination starts it only if so
  bool tracking = false;
  std::unique_ptr<cpu_throttle> throttle; // auto-converge, once it kicks in
  int dirty_rate_high = 0;
  std::atomic<unsigned> throttle_pct{0};
  std::atomic<bool> dirty_limit_on{false};
  uint64_t dirty_limit_set = 0; // the quota given to the vCPUs
  std::atomic<uint64_t> dirty_limit_quota{1};
  std::atomic<uint64_t> dirty_limit_period_ms{1000};
  dirty_bitmap holes; // first pass: pages known zero (outlives the senders)
  // mapped-ram: the file the pages go to at their offsets (the stream,
  // channels[0], writes the state region after them).
  unique_fd mapped_fd;
  mig::mapped_ram_layout mapped_layout;
  std::vector<uint8_t> mapped_bits; // which pages the file holds, pass after pass
  bool mapped_holes_read = false;   // the first pass took `holes` as known zero
  dirty_bitmap todo{0};             // the pages the current pass sends
  uint64_t passes = 0;
  clock_type::time_point downtime_start;
  // Postcopy: the pages the destination still lacks (it discarded them at
  // the switch) and its requests for some of them, read from the return
  // path by the `mig-return` thread.
  dirty_bitmap owed{0};
  std::mutex return_mtx;
  std::condition_variable return_cv;
  std::deque<mig::page_request> requests;
  // postcopy-preempt: the channel requested pages go on (the last of
  // `channels`), written by the return-path thread, which serves requests
  // itself; `serving` while it sends, so the end waits for it.
  migration_channel* preempt = nullptr;
  bool serving = false;
  std::optional<uint64_t> jump_to; // where the background walk goes on (a request's end)
  bool destination_done = false;   // it placed every page (ready)
  std::thread return_path;
  // Recovery: what the destination was owed at the switch (a resumed
  // postcopy owes what it has not placed of these), the session it began
  // with, and where `migrate resume=true` says to reconnect (under
  // return_mtx).
  dirty_bitmap switch_owed{0};
  // release-ram: this side's pages the destination holds are freed (precopy's
  // once postcopy runs, owed ones as the destination says it placed them).
  bool precopy_released = false;
  std::atomic<uint64_t> released_pages{0};
  std::atomic<bool> release_failed{false};
  std::array<uint8_t, 16> session{};
  std::optional<migration_address> resume_target;
  std::shared_ptr<tls_context> resume_tls;
  // COLO (source_colo.cpp): the checkpoint sequence as this side sees it,
  // x-colo-lost-heartbeat's request (the delay between checkpoints waits on
  // colo_cv), and the figures of the checkpoints so far.
  mig::colo_exchange colo_x;
  std::atomic<bool> colo_lost{false};
  std::mutex colo_mtx;
  std::condition_variable colo_cv;
  std::atomic<uint64_t> checkpoints{0};
  std::vector<uint32_t> checkpoint_pause_us; // the first 1 Mi checkpoints
  // The checkpoint in flight, copied out while the guest was paused: page
  // entries (zero pages flagged) and the non-zero pages' data in order.
  std::vector<uint64_t> ckpt_entries;
  std::vector<uint8_t> ckpt_data;
  uint64_t checkpoint_pages = 0;
  clock_type::time_point colo_start;
  // The secondary's liveness: when a record last came from it, when a
  // heartbeat last went to it; its word that it took over (then this copy
  // must never run again) or that it quit; the fence, held while the secondary has been
  // silent for colo_fence_ms (or held output outgrew its bound) until
  // x-colo-lost-heartbeat lets the guest run on here alone.
  clock_type::time_point colo_heard;
  clock_type::time_point colo_beat_sent;
  uint64_t colo_beats = 0;
  bool colo_superseded = false;
  bool colo_secondary_quit = false; // it ended COLO and never runs its copy
  guest::pause_guard fence;
  std::atomic<bool> fenced{false};        // `fence` held, for other threads to see
  std::atomic<bool> checkpointing{false}; // a checkpoint's pause held
  // Per checkpoint, the guest's pause and the pages it carried, for
  // query-migrate's x-ferry-colo (the agent's /metrics); under
  // colo_stats_mtx (query-migrate reads them on the QMP thread).
  mutable std::mutex colo_stats_mtx;
  prom::histogram colo_pause_s{
    {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1}};
  prom::histogram colo_pages{{1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144}};
  // Compare mode (source_colo_compare.cpp): the secondary's output not yet
  // compared (from colo_sec_pos), and a divergence that wants a checkpoint
  // now.
  std::string colo_sec_out;
  uint64_t colo_sec_pos = 0;
  bool colo_diverged = false;
  uint64_t colo_divergences = 0;
  std::atomic<uint64_t> colo_compared{0}; // bytes let out because both copies wrote them
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

  // The engine's own pause of the guest ends: it runs again (unless
  // something else holds it) and says so.
  void let_guest_run() {
    if (!paused)
      return;
    paused = {};
    checkpointing = false; // a checkpoint cut short held this same pause
    if (g.state() == run_state::running)
      hooks.emit(qmp::event("RESUME"));
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

  void emit(const char* name, boost::json::object data) {
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
    if (dirty == 0) // nothing to send, even before any rate is known
      return 0;
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
  // background-snapshot (source_background.cpp): RAM write-protected with
  // the guest briefly paused (its CPU state taken then), one walk over it
  // while a `mig-wp` thread saves each page the guest is about to write;
  // then the protection and the thread go.
  caf::expected<source_event> background_setup();
  caf::expected<source_event> background_walk();
  void background_end();
  void background_faults();
  bool background_claim(uint64_t pfn);
  caf::expected<void> background_flush();
  // mapped-ram: the file created at its size, the stream to begin at its
  // state region; each pass writes its pages at their offsets.
  caf::expected<void> open_mapped_file();
  caf::expected<void> write_mapped_pass(const dirty_bitmap& pages);
  caf::expected<source_event> switchover();
  caf::expected<source_event> device_state();
  caf::expected<source_event> handover();
  caf::expected<source_event> postcopy_switch();
  caf::expected<source_event> postcopy();
  caf::expected<source_event> postcopy_paused();
  caf::expected<source_event> postcopy_recover();
  // COLO (source_colo.cpp): the secondary's checkpoint-ready starts it; then
  // a checkpoint every x-checkpoint-delay ms until the secondary is lost or
  // x-colo-lost-heartbeat, when the guest runs on here alone.
  caf::expected<source_event> colo_begin();
  caf::expected<source_event> colo();
  caf::expected<void> checkpoint();
  source_event colo_failover(std::string_view reason, const caf::error& why);
  void report_checkpoints();
  void copy_out_checkpoint();
  caf::expected<void> send_checkpoint_pages();
  caf::expected<void> colo_send(mig::colo_message m, uint64_t value);
  caf::expected<mig::colo_record> colo_expect(mig::colo_message m);
  // One record from the secondary taken (heartbeat: nothing more; abort:
  // why COLO ends); the heartbeat due sent; the fence taken when due.
  caf::expected<void> colo_take(mig::record_type type, std::span<const uint8_t> payload);
  caf::expected<void> colo_listen();
  caf::expected<void> colo_keepalive();
  void colo_fence_if_due();
  void colo_fence(const std::string& why);
  // Compare mode: the secondary's output taken, compared with what this
  // side holds; what both wrote alike goes out (and the secondary is told).
  caf::expected<void> colo_take_output(std::span<const uint8_t> payload);
  caf::expected<void> colo_compare_output();
  // How COLO ends after `why` broke the checkpoint loop: the secondary died
  // (its link ended) — run on alone; it took over — stay stopped; silence —
  // wait, fenced when due, for x-colo-lost-heartbeat.
  source_event colo_end(const caf::error& why);
  source_event colo_superseded_end(const caf::error& why);
  // After a broken postcopy link: the reader joined, the channels closed,
  // ready to wait for a resume.
  void after_link_lost(const caf::error& why);
  void stop_guest();
  caf::expected<void> stop_and_sync();
  caf::expected<void> drain_senders();
  caf::expected<void> send_state();
  caf::expected<void> await_ready();
  caf::expected<void> await_switchover_ack();
  bool switchover_acked = false;
  // Postcopy's steps.
  caf::expected<void> send_discards();
  caf::expected<void> send_postcopy_batch(migration_channel& ch, std::span<const uint64_t> pfns);
  void next_requested(std::vector<uint64_t>& pfns);
  bool await_budget();
  void take_requested(const mig::page_request& r, std::vector<uint64_t>& pfns);
  // Background pages of `owed` from `cursor` on, up to a batch.
  void next_background(std::vector<uint64_t>& pfns, size_t& cursor);
  caf::expected<void> serve_preempted(const mig::page_request& r);
  caf::expected<void> open_preempt(const mig::hello& main_hello);
  void read_return_path();
  void release_run(uint64_t first, uint64_t pages);
  void release_precopy_pages();
  void release_placed(const mig::discard_words& placed);
  void stop_return_path();
  caf::error check_stop_error() const {
    auto ok = check_stop();
    return ok ? make_ferry_error(errc::system_error, "the migration was stopped") : ok.error();
  }
  void maybe_throttle(uint64_t bytes_xfer, uint64_t bytes_dirty);
  caf::expected<migration_channel*> open_channel();
  caf::expected<std::vector<migration_channel*>> open_multifd(mig::hello h);
  caf::expected<void> handshake();
  // Sends `pages` over the senders, then a sync. With `stop_early` (a
  // postcopy switch was asked for) it stops handing out stripes once that
  // is set; the word it stopped at (word_count() when it sent all).
  caf::expected<size_t> send_bitmap(const dirty_bitmap& pages, uint64_t pass,
                                    const std::atomic<bool>* stop_early = nullptr);
};

} // namespace ferry
