// Evacuations: every guest of a host planned off it, highest priority first,
// after a calc-dirty-rate pre-flight that refines each move's estimate.
#include "orchestrator/cluster_state.hpp"

#include "common/error.hpp"
#include "orchestrator/guest_spec_json.hpp"
#include "orchestrator/migration_job.hpp"
#include "orchestrator/move_estimate.hpp"
#include "orchestrator/orchestrator_error.hpp"

#include <algorithm>
#include <cstdio>

namespace ferry::cluster_detail {

// The evacuation's pending moves wait while their guests measure their
// dirty rate (calc-dirty-rate, as an operator would run it); the answers
// refine each move's estimated duration before the queue orders them.
void start_preflight(cluster_actor* self, int64_t evac_id) {
  auto& st = self->state;
  const auto until = std::chrono::steady_clock::now() + preflight_deadline;
  const double bw = planning_bandwidth(st.measured_bandwidth, st.cfg.policy.max_bandwidth);
  for (auto id : st.evacuations[evac_id].jobs) {
    auto it = st.jobs.find(id);
    if (it == st.jobs.end() || it->second.actor || it->second.record.state != job_state::pending)
      continue;
    auto& j = it->second;
    j.estimate_s = estimated_seconds(j.record.memory, 0, bw);
    auto h = st.hosts.find(j.record.source);
    if (h == st.hosts.end() || !h->second.up)
      continue;
    j.preflight_until = until;
    self
      ->request(h->second.handle, request_timeout, qmp_atom::value, j.record.guest,
                std::string{"calc-dirty-rate"},
                json::serialize(json::object{{"calc-time", preflight_calc_time_s}}))
      .then([](const std::string&) {}, [](const caf::error&) {});
  }
  self->delayed_send(self, preflight_read_after, preflight_atom::value, evac_id);
}

void finish_preflight(cluster_actor* self, int64_t evac_id) {
  auto& st = self->state;
  auto e = st.evacuations.find(evac_id);
  if (e == st.evacuations.end())
    return;
  for (auto id : e->second.jobs) {
    auto it = st.jobs.find(id);
    if (it == st.jobs.end() || !it->second.preflight_until)
      continue;
    auto h = st.hosts.find(it->second.record.source);
    if (h == st.hosts.end() || !h->second.up) {
      it->second.preflight_until.reset();
      continue;
    }
    self
      ->request(h->second.handle, request_timeout, qmp_atom::value, it->second.record.guest,
                std::string{"query-dirty-rate"}, std::string{})
      .then(
        [self, id, evac_id](const std::string& reply) {
          auto& st1 = self->state;
          auto j = st1.jobs.find(id);
          if (j == st1.jobs.end() || !j->second.preflight_until)
            return;
          try {
            const auto v = json::parse(reply);
            const auto& r = v.at("return").as_object();
            if (r.at("status").as_string() == "measuring" &&
                std::chrono::steady_clock::now() < *j->second.preflight_until) {
              // Not done yet: ask again shortly (the deadline bounds it).
              self->delayed_send(self, std::chrono::milliseconds(200), preflight_atom::value,
                                 evac_id);
              return;
            }
            j->second.preflight_until.reset();
            if (r.at("status").as_string() == "measured") {
              const double rate = r.at("dirty-rate").to_number<double>() * 1024 * 1024;
              j->second.dirty_rate = rate;
              j->second.estimate_s = estimated_seconds(
                j->second.record.memory, rate,
                planning_bandwidth(st1.measured_bandwidth, st1.cfg.policy.max_bandwidth));
            }
          } catch (const std::exception&) {
            // No measurement: the estimate from the size stands.
            j->second.preflight_until.reset();
          }
          try_schedule(self);
        },
        [self, id](const caf::error&) {
          if (auto j = self->state.jobs.find(id); j != self->state.jobs.end())
            j->second.preflight_until.reset();
          try_schedule(self);
        });
  }
}

caf::expected<std::string> api_evacuate(cluster_actor* self, const std::string& host) {
  auto& st = self->state;
  auto h = st.hosts.find(host);
  if (h == st.hosts.end())
    return make_orchestrator_error(orchestrator_errc::invalid_request,
                                   "unknown host '" + host + "'");
  if (!h->second.up)
    return make_orchestrator_error(orchestrator_errc::host_down, "host " + host + " is down");
  for (const auto& [id, e] : st.evacuations)
    if (e.record.host == host && !e.record.finished)
      return make_orchestrator_error(orchestrator_errc::conflict,
                                     "host " + host + " is already being evacuated");
  auto rec = st.log->add_evacuation(host);
  if (!rec)
    return rec.error();
  st.evacuations[rec->id] = evacuation_entry{*rec, {}};
  h->second.draining = true;
  // Moves not yet started towards the host now draining go elsewhere.
  std::vector<job_record> replan;
  for (auto& [id, j] : st.jobs)
    if (!j.actor && j.record.state == job_state::pending && j.record.target == host) {
      j.record.error = "host " + host + " is being evacuated";
      drop_stage(self, j);
      if (st.log->move(j.record, job_state::cancelled, j.record.error)) {
        j.record.state = job_state::cancelled;
        count_finished(st, j);
        replan.push_back(j.record);
      }
    }
  for (auto& r : replan) {
    if (r.evacuation != 0) {
      r.attempt = 0;
      retry_elsewhere(self, r);
      check_evacuation_done(self, r.evacuation);
    } else {
      (void) plan_move(self, r.guest, r.source, r.memory, r.priority, 0);
    }
  }
  // Highest priority first, then the smallest (quickest) guests.
  auto guests = h->second.guests;
  std::stable_sort(guests.begin(), guests.end(), [](const guest_info& a, const guest_info& b) {
    if (a.spec.priority != b.spec.priority)
      return a.spec.priority > b.spec.priority;
    return a.spec.memory < b.spec.memory;
  });
  json::array planned;
  for (const auto& g : guests) {
    if (in_pair(st, g.spec.name)) {
      // Its pair moves it: the secondary promoted (or, for a secondary
      // here, protection made elsewhere) — cluster_pairs.
      planned.push_back(json::object{{"guest", g.spec.name}, {"colo", "moves with its COLO pair"}});
      continue;
    }
    if (g.spec.incoming)
      continue;
    auto r = api_migrate(self, g.spec.name, "", rec->id, false);
    if (r)
      planned.push_back(json::parse(*r));
    else
      planned.push_back(json::object{{"guest", g.spec.name}, {"error", describe(r.error())}});
  }
  start_preflight(self, rec->id);
  check_evacuation_done(self, rec->id);
  try_schedule(self); // moves without a pre-flight (their host is down) go now
  return json::serialize(json::object{{"id", rec->id}, {"host", host}, {"migrations", planned}});
}

} // namespace ferry::cluster_detail
