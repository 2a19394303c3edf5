#pragma once
// What ferry-orchestrator's GET /metrics says (names in docs/metrics.md).
// The cluster actor owns one orchestrator_metrics: it feeds it events as they
// happen (a job finished, an escalation step) and hands it a view of its
// state at each scrape. Only that actor touches it: no locks.

#include "orchestrator/job_state.hpp"
#include "orchestrator/pair_state.hpp"
#include "protocol/prometheus_text.hpp"

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ferry {

struct host_view {
  std::string name;
  bool up = false;
  bool degraded = false;
  bool draining = false;
  uint64_t memory_total = 0;
  uint64_t memory_used = 0;
  uint32_t guests = 0;
};

struct migration_view {
  int64_t id = 0;
  std::string guest, source, target;
  job_state state = job_state::pending;
  int64_t evacuation = 0;
  // From the last query-migrate: absent before the migration runs.
  std::optional<uint64_t> transferred, remaining;
  std::optional<double> rate; // bytes per second
  std::optional<uint64_t> passes;
  std::string status; // the source's migration status
  std::optional<double> postcopy_paused_s, postcopy_blocktime_s;
};

struct evacuation_view {
  int64_t id = 0;
  std::string host;
  bool finished = false;
  uint32_t moved = 0;           // jobs that succeeded
  uint32_t in_flight = 0;       // jobs not final yet
  uint32_t failed_attempts = 0; // jobs failed or cancelled (a guest may be retried)
  uint32_t remaining = 0;       // guests still running on the host
};

struct pair_view {
  std::string guest, primary, secondary;
  pair_state state = pair_state::protecting;
  double unprotected_s = 0; // since it was last protected; 0 while it is
};

struct cluster_view {
  std::vector<host_view> hosts;
  std::vector<migration_view> migrations;
  std::vector<evacuation_view> evacuations;
  std::vector<pair_view> pairs;
  uint64_t colo_failovers = 0; // since the orchestrator started
};

class orchestrator_metrics {
public:
  orchestrator_metrics();

  // A job reached a final state. Duration and downtime come from its last
  // query-migrate (absent if it never ran); limit is the downtime-limit in
  // force at the end; error is the job's error text (a failure the
  // destination's switchover proof refused is counted as such).
  void job_finished(job_state result, std::optional<double> duration_s,
                    std::optional<double> downtime_s, std::optional<double> downtime_limit_s,
                    std::string_view error = {});
  // `kind` is a ladder rung ("downtime-limit", "auto-converge",
  // "dirty-limit", "postcopy", "cancel") or a postcopy recovery's news
  // ("postcopy-recover": an attempt; "postcopy-recovered"), counted apart.
  void escalation_step(const std::string& kind);
  // A snapshot operation (save, restore, delete) ended: ok or failed.
  void snapshot_finished(const std::string& op, bool ok) {
    ++snapshots_[{op, ok ? "done" : "failed"}];
  }

  // Renders everything; per-migration progress never goes backwards between
  // scrapes (a pass that finds more dirty memory does not undo progress shown).
  std::string render(const cluster_view& view);

private:
  // Counters and histograms over all migrations; per unfinished migration
  // (progress held at its highest, ETA, passes).
  void render_totals(prom::text_writer& w, const cluster_view& view) const;
  void render_live_migrations(prom::text_writer& w, const cluster_view& view);

  std::map<std::string, uint64_t> finished_; // by result
  std::map<std::string, uint64_t> steps_;    // by kind
  uint64_t over_limit_ = 0;
  std::map<std::string, uint64_t> proofs_;     // switchover proofs, by result
  std::map<std::string, uint64_t> recoveries_; // postcopy recoveries: attempted, recovered
  std::map<std::pair<std::string, std::string>, uint64_t> snapshots_; // (op, result)
  prom::histogram duration_;
  prom::histogram downtime_;
  std::map<int64_t, double> progress_floor_; // job id -> highest ratio shown
};

} // namespace ferry
