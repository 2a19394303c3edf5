#include "agent/migration/migration_source.hpp"

#include "agent/migration/source_engine.hpp"

namespace ferry {

namespace json = boost::json;

void migration_source::impl::run() {
  auto ok = [this] {
    const auto registered = name_migration_thread(hooks.threads, "mig-source");
    return execute();
  }();
  background_end(); // every writer goes on, whatever became of the snapshot
  if (!ok) {
    note_failure(ok.error());
    senders.clear();
  }
  stop_return_path();
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
  // Not after postcopy's go: the destination may be running it.
  if (!postcopy_committed)
    let_guest_run();
  {
    std::lock_guard lk{mtx};
    channels.clear();
  }
  finished = true;
  if (postcopy_committed) {
    // The guest runs on the destination, waiting there for the pages this
    // side still owes: the migration pauses (QEMU's postcopy-paused) and
    // this stopped copy stays with the owner.
    if (hooks.keep_stopped)
      hooks.keep_stopped(paused);
    // Abandoned while paused (the destination is gone): failed, and this
    // stale copy never resumes on its own.
    if (cancelled)
      hooks.step(migration_event::fail);
    else
      hooks.step(migration_event::postcopy_broken);
    return;
  }
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
  if (impl_->postcopy_committed) {
    std::lock_guard lk{impl_->mtx};
    impl_->error = "postcopy abandoned by migrate_cancel while paused: the pages the destination "
                   "still lacked are lost, and this copy (stale since the switch) stays stopped";
  }
  impl_->cancelled = true;
  impl_->halt();
  std::lock_guard lk{impl_->return_mtx}; // a paused postcopy waits on this
  impl_->return_cv.notify_all();
}

void migration_source::resume_switchover() {
  impl_->resume = true;
}

void migration_source::start_postcopy() {
  impl_->postcopy_requested = true;
}

void migration_source::pause_postcopy() {
  impl_->note_failure(make_ferry_error(errc::bad_run_state, "paused by migrate-pause"));
}

void migration_source::resume_postcopy(migration_address target, std::shared_ptr<tls_context> tls) {
  std::lock_guard lk{impl_->return_mtx};
  impl_->resume_target = std::move(target);
  impl_->resume_tls = std::move(tls);
  impl_->return_cv.notify_all();
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
  const uint64_t transferred = p.ctr.precopy_bytes + p.ctr.downtime_bytes + p.ctr.postcopy_bytes;
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
  if (p.plan.colo && (s == migration_status::colo || p.checkpoints != 0)) {
    // Ferry's own member (QMP clients ignore what they do not know): the
    // checkpoints' figures, as histograms the agent's /metrics renders.
    const auto histogram_json = [](const prom::histogram& h) {
      json::array bounds, counts;
      for (double b : h.bounds())
        bounds.push_back(b);
      for (uint64_t c : h.counts())
        counts.push_back(c);
      return json::object{{"bounds", bounds}, {"counts", counts}, {"sum", h.sum()}};
    };
    std::lock_guard lk{p.colo_stats_mtx};
    info["x-ferry-colo"] = json::object{{"checkpoints", p.checkpoints.load()},
                                        {"fenced", p.fenced.load()},
                                        {"compared-bytes", p.colo_compared.load()},
                                        {"pause-seconds", histogram_json(p.colo_pause_s)},
                                        {"pages", histogram_json(p.colo_pages)}};
  }
  if (s == migration_status::failed) {
    std::lock_guard lk{p.mtx};
    info["error-desc"] = p.error;
  }
}

} // namespace ferry
