#include "orchestrator/orchestrator_metrics.hpp"

#include "protocol/page_digest.hpp"

#include <algorithm>
#include <set>

namespace ferry {

using prom::metric_type;

orchestrator_metrics::orchestrator_metrics()
  // Migrations here take from under a second (small guests on one box) to
  // tens of minutes (large busy guests on a shared link).
  : duration_({0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800}),
    // Downtime: QEMU's default limit is 300 ms; buckets around it.
    downtime_({0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1, 2, 5}) {
  for (const char* r : {"succeeded", "failed", "cancelled"})
    finished_[r] = 0;
  for (const char* k : {"downtime-limit", "auto-converge", "dirty-limit", "postcopy", "cancel"})
    steps_[k] = 0;
  for (const char* r : {"attempted", "recovered"})
    recoveries_[r] = 0;
  for (const char* r : {"verified", "refused"})
    proofs_[r] = 0;
}

void orchestrator_metrics::job_finished(job_state result, std::optional<double> duration_s,
                                        std::optional<double> downtime_s,
                                        std::optional<double> downtime_limit_s,
                                        std::string_view error) {
  ++finished_[std::string{to_string(result)}];
  // A target is only confirmed once its incoming migration completed, and it
  // completes only after its pages matched the source's switchover digest:
  // every success is a verified hand-over. A refusal reaches the job's
  // error through the source's error-desc.
  if (result == job_state::failed && error.find(mig::digest_mismatch_phrase) != error.npos)
    ++proofs_["refused"];
  if (result != job_state::succeeded)
    return;
  ++proofs_["verified"];
  if (duration_s)
    duration_.observe(*duration_s);
  if (downtime_s) {
    downtime_.observe(*downtime_s);
    if (downtime_limit_s && *downtime_s > *downtime_limit_s)
      ++over_limit_;
  }
}

void orchestrator_metrics::escalation_step(const std::string& kind) {
  if (kind == "postcopy-recover")
    ++recoveries_["attempted"];
  else if (kind == "postcopy-recovered")
    ++recoveries_["recovered"];
  else
    ++steps_[kind];
}

namespace {

void render_hosts(prom::text_writer& w, const cluster_view& view) {
  w.family("ferry_orchestrator_host_up", metric_type::gauge,
           "1 while the orchestrator holds a link to the host's agent.");
  for (const auto& h : view.hosts)
    w.sample({{"host", h.name}}, h.up ? 1 : 0);
  w.family("ferry_orchestrator_host_degraded", metric_type::gauge,
           "1 while the host is up but has missed inventory refreshes in a row.");
  for (const auto& h : view.hosts)
    w.sample({{"host", h.name}}, h.degraded ? 1 : 0);
  w.family("ferry_orchestrator_host_draining", metric_type::gauge,
           "1 while the host is being evacuated.");
  for (const auto& h : view.hosts)
    w.sample({{"host", h.name}}, h.draining ? 1 : 0);
  w.family("ferry_orchestrator_host_memory_offered_bytes", metric_type::gauge,
           "Memory the host's agent offers to guests (last inventory).");
  for (const auto& h : view.hosts)
    if (h.up)
      w.sample({{"host", h.name}}, static_cast<double>(h.memory_total));
  w.family("ferry_orchestrator_host_memory_used_bytes", metric_type::gauge,
           "Memory of the guests on the host (last inventory).");
  for (const auto& h : view.hosts)
    if (h.up)
      w.sample({{"host", h.name}}, static_cast<double>(h.memory_used));
  w.family("ferry_orchestrator_host_guests", metric_type::gauge,
           "Guests on the host (last inventory).");
  for (const auto& h : view.hosts)
    if (h.up)
      w.sample({{"host", h.name}}, h.guests);
}

void render_evacuations(prom::text_writer& w, const cluster_view& view) {
  w.family("ferry_orchestrator_evacuations_in_progress", metric_type::gauge,
           "Evacuations not finished yet.");
  w.sample({}, static_cast<double>(std::count_if(view.evacuations.begin(), view.evacuations.end(),
                                                 [](const auto& e) { return !e.finished; })));
  w.family("ferry_orchestrator_evacuation_guests", metric_type::gauge,
           "An evacuation's guests: moved, in_flight, failed_attempts, remaining on the host.");
  for (const auto& e : view.evacuations) {
    const std::string id = std::to_string(e.id);
    w.sample({{"host", e.host}, {"evacuation", id}, {"state", "moved"}}, e.moved);
    w.sample({{"host", e.host}, {"evacuation", id}, {"state", "in_flight"}}, e.in_flight);
    w.sample({{"host", e.host}, {"evacuation", id}, {"state", "failed_attempts"}},
             e.failed_attempts);
    w.sample({{"host", e.host}, {"evacuation", id}, {"state", "remaining"}}, e.remaining);
  }
  w.family("ferry_orchestrator_evacuation_progress_ratio", metric_type::gauge,
           "Share of an evacuation's guests moved off the host (1 once finished).");
  for (const auto& e : view.evacuations) {
    const double all = static_cast<double>(e.moved) + e.remaining;
    const double ratio = e.finished ? 1.0 : all > 0 ? e.moved / all : 0.0;
    w.sample({{"host", e.host}, {"evacuation", std::to_string(e.id)}}, ratio);
  }
}

void render_pairs(prom::text_writer& w, const cluster_view& view) {
  w.family("ferry_orchestrator_colo_pairs", metric_type::gauge, "COLO pairs by state.");
  for (auto s : all_pair_states()) {
    if (s == pair_state::ended)
      continue;
    const auto n = std::count_if(view.pairs.begin(), view.pairs.end(),
                                 [s](const pair_view& p) { return p.state == s; });
    w.sample({{"state", std::string{to_string(s)}}}, static_cast<double>(n));
  }
  w.family("ferry_orchestrator_colo_pair_state", metric_type::gauge,
           "1 for each COLO pair's current state, 0 for the others.");
  for (const auto& p : view.pairs)
    for (auto s : all_pair_states())
      if (s != pair_state::ended)
        w.sample({{"vm", p.guest}, {"state", std::string{to_string(s)}}}, p.state == s ? 1 : 0);
  w.family("ferry_orchestrator_colo_unprotected_seconds", metric_type::gauge,
           "Time since a COLO pair was last protected (0 while it is).");
  for (const auto& p : view.pairs)
    w.sample({{"vm", p.guest}}, p.unprotected_s);
  w.family("ferry_orchestrator_colo_failovers_total", metric_type::counter,
           "COLO failovers (a secondary became the guest) since the orchestrator started.");
  w.sample({}, static_cast<double>(view.colo_failovers));
}

} // namespace

void orchestrator_metrics::render_totals(prom::text_writer& w, const cluster_view& view) const {
  w.family("ferry_orchestrator_migrations", metric_type::gauge,
           "Migrations by phase (job state), unfinished ones.");
  for (auto s : all_job_states()) {
    if (job_is_final(s))
      continue;
    const auto n = std::count_if(view.migrations.begin(), view.migrations.end(),
                                 [s](const migration_view& m) { return m.state == s; });
    w.sample({{"phase", std::string{to_string(s)}}}, static_cast<double>(n));
  }
  w.family("ferry_orchestrator_migrations_finished_total", metric_type::counter,
           "Migrations that reached a final state, by result, since the orchestrator started.");
  for (const auto& [result, n] : finished_)
    w.sample({{"result", result}}, static_cast<double>(n));
  w.family("ferry_orchestrator_migration_duration_seconds", metric_type::histogram,
           "Total time of succeeded migrations (query-migrate total-time).");
  w.sample({}, duration_);
  w.family("ferry_orchestrator_migration_downtime_seconds", metric_type::histogram,
           "Downtime of succeeded migrations (query-migrate downtime).");
  w.sample({}, downtime_);
  w.family("ferry_orchestrator_migrations_over_downtime_limit_total", metric_type::counter,
           "Succeeded migrations whose downtime exceeded the downtime-limit in force.");
  w.sample({}, static_cast<double>(over_limit_));
  w.family("ferry_orchestrator_snapshots_total", metric_type::counter,
           "Snapshot operations the orchestrator ran on a guest's agent, by op (save, restore, "
           "delete) and result (done, failed).");
  for (const auto& [key, n] : snapshots_)
    w.sample({{"op", key.first}, {"result", key.second}}, static_cast<double>(n));
  w.family("ferry_orchestrator_escalation_steps_total", metric_type::counter,
           "Escalation-ladder steps taken, by kind (downtime-limit, auto-converge, dirty-limit, "
           "postcopy, cancel).");
  for (const auto& [kind, n] : steps_)
    w.sample({{"step", kind}}, static_cast<double>(n));
  w.family("ferry_orchestrator_switchover_proofs_total", metric_type::counter,
           "Hand-overs judged by the destination's switchover digest: verified (its pages "
           "matched the source's, the migration succeeded) or refused (a mismatch failed it).");
  for (const auto& [result, n] : proofs_)
    w.sample({{"result", result}}, static_cast<double>(n));
  w.family("ferry_orchestrator_postcopy_recoveries_total", metric_type::counter,
           "Postcopy links recovered by the orchestrator: attempts (migrate-recover and "
           "resume sent) and recoveries (back in postcopy-active).");
  for (const auto& [result, n] : recoveries_)
    w.sample({{"result", result}}, static_cast<double>(n));
  w.family("ferry_orchestrator_migrations_postcopy", metric_type::gauge,
           "Unfinished migrations in postcopy, by the source's status (postcopy-active, "
           "postcopy-paused, postcopy-recover).");
  for (const char* phase : {"postcopy-active", "postcopy-paused", "postcopy-recover"}) {
    const auto n = std::count_if(
      view.migrations.begin(), view.migrations.end(),
      [phase](const migration_view& m) { return !job_is_final(m.state) && m.status == phase; });
    w.sample({{"phase", phase}}, static_cast<double>(n));
  }
}

void orchestrator_metrics::render_live_migrations(prom::text_writer& w, const cluster_view& view) {
  // Per unfinished migration. Progress: share of the guest's memory sent,
  // transferred / (transferred + remaining), held at its highest so far.
  std::set<int64_t> live;
  auto labels_of = [](const migration_view& m) {
    return prom::labels{
      {"id", std::to_string(m.id)}, {"vm", m.guest}, {"source", m.source}, {"target", m.target}};
  };
  w.family("ferry_orchestrator_migration_progress_ratio", metric_type::gauge,
           "Share of the migration done (0..1); never decreases.");
  for (const auto& m : view.migrations) {
    if (job_is_final(m.state))
      continue;
    live.insert(m.id);
    double ratio = 0;
    if (m.state == job_state::completing)
      ratio = 1;
    else if (m.transferred && m.remaining && *m.transferred + *m.remaining > 0)
      ratio =
        static_cast<double>(*m.transferred) / static_cast<double>(*m.transferred + *m.remaining);
    auto& floor = progress_floor_[m.id];
    floor = std::max(floor, ratio);
    w.sample(labels_of(m), floor);
  }
  for (auto it = progress_floor_.begin(); it != progress_floor_.end();)
    it = live.count(it->first) == 0 ? progress_floor_.erase(it) : std::next(it);
  w.family("ferry_orchestrator_migration_eta_seconds", metric_type::gauge,
           "Estimated time left: remaining bytes over the current transfer rate.");
  for (const auto& m : view.migrations)
    if (!job_is_final(m.state) && m.remaining && m.rate && *m.rate > 0)
      w.sample(labels_of(m), static_cast<double>(*m.remaining) / *m.rate);
  w.family("ferry_orchestrator_migration_postcopy_paused_seconds", metric_type::gauge,
           "Time the migration's postcopy has spent paused (link broken) so far; 0 before "
           "postcopy.");
  for (const auto& m : view.migrations)
    if (!job_is_final(m.state))
      w.sample(labels_of(m), m.postcopy_paused_s.value_or(0));
  w.family("ferry_orchestrator_migration_postcopy_blocktime_seconds", metric_type::gauge,
           "Time the target's vCPUs have waited for pages in postcopy (postcopy-blocktime); 0 "
           "before postcopy.");
  for (const auto& m : view.migrations)
    if (!job_is_final(m.state))
      w.sample(labels_of(m), m.postcopy_blocktime_s.value_or(0));
  w.family("ferry_orchestrator_migration_passes", metric_type::gauge,
           "Dirty-log passes of the migration so far (dirty-sync-count).");
  for (const auto& m : view.migrations)
    if (!job_is_final(m.state) && m.passes)
      w.sample(labels_of(m), static_cast<double>(*m.passes));
}

std::string orchestrator_metrics::render(const cluster_view& view) {
  prom::text_writer w;
  render_hosts(w, view);
  render_totals(w, view);
  render_live_migrations(w, view);
  render_evacuations(w, view);
  render_pairs(w, view);
  return w.text();
}

} // namespace ferry
