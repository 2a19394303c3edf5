// The cluster as JSON and as the metrics' view: jobs, hosts, guests,
// migrations with their steps, evacuations; finished-job accounting.
#include "orchestrator/cluster_state.hpp"

#include "common/error.hpp"
#include "orchestrator/guest_spec_json.hpp"
#include "orchestrator/migration_job.hpp"
#include "orchestrator/move_estimate.hpp"
#include "orchestrator/orchestrator_error.hpp"

#include <algorithm>
#include <cstdio>

namespace ferry::cluster_detail {

json::object job_json(const job_entry& j) {
  json::object o{{"id", j.record.id},
                 {"guest", j.record.guest},
                 {"source", j.record.source},
                 {"target", j.record.target},
                 {"state", std::string{to_string(j.record.state)}},
                 {"evacuation", j.record.evacuation},
                 {"attempt", j.record.attempt},
                 {"memory", j.record.memory},
                 {"error", j.record.error}};
  if (j.estimate_s > 0)
    o["estimate_s"] = j.estimate_s;
  if (j.dirty_rate)
    o["dirty_rate"] = *j.dirty_rate;
  o["progress"] = j.progress.raw;
  return o;
}

// Counts a job that has just reached its final state, with the figures of
// its last query-migrate.
void count_finished(cluster_state& st, const job_entry& j) {
  const auto& p = j.progress; // no figures when the job never ran
  st.metrics.job_finished(j.record.state, p.total_s, p.downtime_s, p.downtime_limit_s,
                          j.record.error);
}

cluster_view view_of(const cluster_state& st) {
  cluster_view v;
  for (const auto& [name, h] : st.hosts)
    v.hosts.push_back(host_view{name, h.up, h.degraded(), h.draining, h.capacity.memory_total,
                                h.capacity.memory_used, h.capacity.guests});
  for (const auto& [id, j] : st.jobs) {
    migration_view m;
    m.id = id;
    m.guest = j.record.guest;
    m.source = j.record.source;
    m.target = j.record.target;
    m.state = j.record.state;
    m.evacuation = j.record.evacuation;
    m.transferred = j.progress.transferred;
    m.remaining = j.progress.remaining;
    m.passes = j.progress.passes;
    m.rate = j.progress.rate;
    m.status = j.progress.status;
    m.postcopy_paused_s = j.progress.postcopy_paused_s;
    m.postcopy_blocktime_s = j.progress.postcopy_blocktime_s;
    v.migrations.push_back(std::move(m));
  }
  for (const auto& [id, e] : st.evacuations) {
    evacuation_view ev;
    ev.id = id;
    ev.host = e.record.host;
    ev.finished = e.record.finished;
    for (auto jid : e.jobs) {
      auto j = st.jobs.find(jid);
      if (j == st.jobs.end())
        continue;
      const auto s = j->second.record.state;
      if (s == job_state::succeeded)
        ++ev.moved;
      else if (job_is_final(s))
        ++ev.failed_attempts;
      else
        ++ev.in_flight;
    }
    if (auto h = st.hosts.find(e.record.host); h != st.hosts.end())
      for (const auto& g : h->second.guests)
        ev.remaining += g.spec.incoming ? 0 : 1;
    v.evacuations.push_back(std::move(ev));
  }
  for (const auto& [guest, pe] : st.pairs) {
    const auto& r = pe.record;
    const double unprotected =
      r.state == pair_state::protected_
        ? 0
        : std::chrono::duration<double>(std::chrono::steady_clock::now() - pe.unprotected_since)
            .count();
    v.pairs.push_back(pair_view{r.guest, r.primary, r.secondary, r.state, unprotected});
  }
  v.colo_failovers = st.colo_failovers;
  return v;
}

std::string api_get(cluster_actor* self, const std::string& what) {
  auto& st = self->state;
  json::array out;
  if (what == "hosts") {
    for (const auto& [name, h] : st.hosts)
      out.push_back(json::object{{"name", name},
                                 {"up", h.up},
                                 {"degraded", h.degraded()},
                                 {"draining", h.draining},
                                 {"memory_total", h.capacity.memory_total},
                                 {"memory_used", h.capacity.memory_used},
                                 {"guests", h.guests.size()},
                                 {"refusal", h.refusal}});
  } else if (what == "guests") {
    for (const auto& [name, h] : st.hosts)
      for (const auto& g : h.guests)
        out.push_back(json::object{{"name", g.spec.name},
                                   {"host", name},
                                   {"memory", g.spec.memory},
                                   {"vcpus", g.spec.vcpus},
                                   {"priority", g.spec.priority},
                                   {"incoming", g.spec.incoming}});
  } else if (what == "pairs") {
    out = pairs_json(st);
  } else if (what == "snapshots") {
    out = snapshots_json(st);
  } else if (what == "migrations") {
    std::map<int64_t, json::array> steps;
    for (const auto& step : st.log->steps())
      steps[step.job].push_back(json::string{step.step});
    for (const auto& [id, j] : st.jobs) {
      auto o = job_json(j);
      o["steps"] = std::move(steps[id]);
      out.push_back(std::move(o));
    }
  } else if (what == "evacuations") {
    for (const auto& [id, e] : st.evacuations) {
      json::array jobs;
      for (auto j : e.jobs)
        jobs.push_back(j);
      out.push_back(json::object{{"id", id},
                                 {"host", e.record.host},
                                 {"finished", e.record.finished},
                                 {"migrations", jobs}});
    }
  }
  return json::serialize(out);
}

} // namespace ferry::cluster_detail
