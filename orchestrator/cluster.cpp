#include "orchestrator/cluster.hpp"

#include "common/error.hpp"
#include "common/log.hpp"
#include "orchestrator/cluster_state.hpp"
#include "orchestrator/guest_spec_json.hpp"
#include "orchestrator/migration_job.hpp"
#include "orchestrator/move_estimate.hpp"
#include "orchestrator/orchestrator_error.hpp"

#include <caf/all.hpp>
#include <caf/openssl/manager.hpp>

#include <boost/json.hpp>

#include <algorithm>

#include <cstdio>

namespace ferry {

namespace {

using namespace cluster_detail;
namespace json = boost::json;

// The journal's unfinished evacuations and jobs, as the last orchestrator
// left them.
void replay_journal(cluster_actor* self, orchestrator_config cfg, std::shared_ptr<journal> log) {
  auto& init = self->state;
  init.cfg = std::move(cfg);
  init.log = std::move(log);
  for (const auto& a : init.cfg.agents) {
    init.hosts[a.name].address = a; // the rest as host_entry initialises it (backoff 250 ms)
    // Out of reach since this orchestrator began, as far as it can tell.
    init.hosts[a.name].down_since = std::chrono::steady_clock::now();
  }
  // What the journal says was unfinished when the last orchestrator stopped.
  for (const auto& e : init.log->evacuations(true)) {
    init.evacuations[e.id] = evacuation_entry{e, {}};
    if (auto h = init.hosts.find(e.host); h != init.hosts.end())
      h->second.draining = true;
  }
  for (auto& p : init.log->pairs(true)) {
    auto& pe = init.pairs[p.guest];
    pe.record = p;
    pe.since = pe.unprotected_since = std::chrono::steady_clock::now();
  }
  for (auto& j : init.log->jobs(true)) {
    const bool resume = j.state != job_state::pending;
    if (j.evacuation != 0)
      init.evacuations[j.evacuation].jobs.insert(j.id);
    job_entry entry;
    entry.record = j;
    entry.resume = resume;
    init.jobs[j.id] = std::move(entry);
  }
  resume_snapshots(self);
  for (const auto& a : init.cfg.agents)
    connect_host(self, a.name);
}

// A job actor or a host link went away.
void on_down(cluster_actor* self, const caf::down_msg& dm) {
  auto& st = self->state;
  // A job actor that ended without reporting a final state (a bug): its
  // journal entry must not stay open for ever.
  for (auto& [id, j] : st.jobs) {
    if (!j.actor || j.actor.address() != dm.source)
      continue;
    j.actor = nullptr;
    if (!job_is_final(j.record.state)) {
      j.record.error = "job ended unexpectedly: " + self->system().render(dm.reason);
      log::error("job {}: {}", id, j.record.error);
      if (st.log->move(j.record, job_state::failed, j.record.error))
        j.record.state = job_state::failed;
      count_finished(st, j);
      if (j.record.evacuation != 0) {
        retry_elsewhere(self, j.record);
        check_evacuation_done(self, j.record.evacuation);
      }
    }
    try_schedule(self);
    return;
  }
  for (auto& [name, h] : st.hosts) {
    if (!h.up || h.handle.address() != dm.source)
      continue;
    log::warn("host {} is down ({})", name, self->system().render(dm.reason));
    h.up = false;
    // A host that was degraded when it went down is not said to "answer
    // again" on its next link.
    h.missed_refreshes = 0;
    h.handle = nullptr;
    h.guests.clear();
    h.down_since = std::chrono::steady_clock::now();
    self->delayed_send(self, h.backoff, connect_host_atom::value, name);
    // Moves not yet started towards the lost host: evacuation moves are
    // planned again elsewhere. Moves off it wait for it to come back (its
    // guests outlive an agent restart), for source_return_s at most.
    // Running ones settle on their own (their requests to it fail).
    give_up_on_source(self, name);
    std::vector<job_record> replan;
    for (auto& [id, j] : st.jobs)
      if (j.record.source == name || j.record.target == name) {
        if (j.actor)
          self->send(j.actor, host_lost_atom::value, name);
        drop_stage(self, j);
      }
    for (auto& [id, j] : st.jobs) {
      if (j.actor || j.record.state != job_state::pending || j.record.target != name)
        continue;
      j.record.error = "host " + name + " went down before the move started";
      if (!st.log->move(j.record, job_state::cancelled, j.record.error))
        continue;
      j.record.state = job_state::cancelled;
      count_finished(st, j);
      if (j.record.evacuation != 0) {
        replan.push_back(j.record);
        check_evacuation_done(self, j.record.evacuation);
      }
    }
    for (auto& r : replan) {
      r.attempt = 0; // a re-plan, not a failed attempt
      retry_elsewhere(self, r);
    }
    tend_pairs(self);
  }
  try_schedule(self);
}

// The inventory of every host that is up, every refresh_interval.
void refresh(cluster_actor* self) {
  for (auto& [name, h] : self->state.hosts) {
    if (!h.up)
      continue;
    const std::string n = name;
    self->request(h.handle, inventory_timeout, list_atom::value)
      .then([self, n](std::vector<guest_info>& gs) { take_inventory(self, n, std::move(gs)); },
            [self, n](const caf::error& err) {
              // Slow or silent, but its link is not down (yet): shown degraded,
              // no new moves to or from it. The heartbeat decides "down".
              auto& hs = self->state.hosts.at(n);
              if (!hs.up)
                return;
              ++hs.missed_refreshes;
              if (hs.missed_refreshes == host_entry::degraded_after)
                log::warn("host {} is degraded: {} inventory refreshes unanswered ({})", n,
                          hs.missed_refreshes, describe(err));
            });
    ask_capacity(self, n);
  }
  tend_pairs(self);
}

void on_job_done(cluster_actor* self, const job_record& rec) {
  auto& st = self->state;
  auto it = st.jobs.find(rec.id);
  if (it == st.jobs.end())
    return;
  it->second.record = rec;
  it->second.actor = nullptr;
  count_finished(st, it->second);
  if (rec.state == job_state::succeeded)
    st.measured_bandwidth =
      update_measured_bandwidth(st.measured_bandwidth, it->second.progress.average_rate());
  // Landed on a host that began draining meanwhile: it moves on, as
  // part of that host's evacuation.
  for (auto& [eid, e] : st.evacuations)
    if (e.record.host == rec.target && !e.record.finished) {
      if (rec.state == job_state::succeeded)
        (void) plan_move(self, rec.guest, rec.target, rec.memory, rec.priority, eid);
      check_evacuation_done(self, eid);
      break;
    }
  if (rec.evacuation != 0) {
    if (rec.state == job_state::failed)
      retry_elsewhere(self, rec);
    check_evacuation_done(self, rec.evacuation);
  }
  self->send(self, refresh_now_atom::value);
  try_schedule(self);
}

// A staged job gave up getting ready (or was told to). Its move waits on,
// to start the plain way; one granted meanwhile lost its go with the
// stager: it starts now.
void on_stage_dropped(cluster_actor* self, int64_t id) {
  auto it = self->state.jobs.find(id);
  if (it == self->state.jobs.end())
    return;
  auto& j = it->second;
  if (j.stager) {
    j.stager = nullptr;
  } else if (j.actor && j.record.state == job_state::scheduling) {
    j.actor = spawn_job(self, j, false);
    return;
  }
  try_schedule(self);
}

caf::result<std::string> api_create(cluster_actor* self, const std::string& host,
                                    const std::string& spec_json) {
  auto h = self->state.hosts.find(host);
  if (h == self->state.hosts.end())
    return make_orchestrator_error(orchestrator_errc::invalid_request,
                                   "unknown host '" + host + "'");
  if (!h->second.up)
    return make_orchestrator_error(orchestrator_errc::host_down, "host " + host + " is down");
  auto spec = guest_spec_from_json(spec_json);
  if (!spec)
    return spec.error();
  auto rp = self->make_response_promise<std::string>();
  self->request(h->second.handle, create_request_timeout, create_atom::value, *spec)
    .then(
      [self, rp, host](const guest_info& info) mutable {
        // An inventory answered while the guest was starting may list it
        // already: one entry per guest, or it looks as if on two hosts.
        auto& gs = self->state.hosts.at(host).guests;
        auto same = std::find_if(
          gs.begin(), gs.end(), [&](const guest_info& g) { return g.spec.name == info.spec.name; });
        if (same != gs.end())
          *same = info;
        else
          gs.push_back(info);
        rp.deliver(json::serialize(json::object{{"name", info.spec.name},
                                                {"host", host},
                                                {"pid", info.pid},
                                                {"qmp_socket", info.qmp_socket}}));
      },
      [rp](caf::error& err) mutable {
        rp.deliver(make_orchestrator_error(orchestrator_errc::invalid_request, describe(err)));
      });
  return rp;
}

caf::result<std::string> api_cancel(cluster_actor* self, int64_t id) {
  auto& st = self->state;
  auto it = st.jobs.find(id);
  if (it == st.jobs.end())
    return make_orchestrator_error(orchestrator_errc::invalid_request,
                                   "no migration " + std::to_string(id));
  auto& j = it->second;
  if (j.actor) {
    self->send(j.actor, cancel_atom::value);
  } else if (j.record.state == job_state::pending) {
    if (auto ok = st.log->move(j.record, job_state::cancelled, "cancelled by request"); !ok)
      return ok.error();
    drop_stage(self, j);
    j.record.state = job_state::cancelled;
    count_finished(st, j);
    if (j.record.evacuation != 0)
      check_evacuation_done(self, j.record.evacuation);
  }
  return json::serialize(job_json(j));
}

cluster_impl::behavior_type cluster(cluster_actor* self, orchestrator_config cfg,
                                    std::shared_ptr<journal> log, caf::actor dialer,
                                    host_verifier verify) {
  self->state.dialer =
    dialer ? std::move(dialer)
           : caf::actor_cast<caf::actor>(self->system().openssl_manager().actor_handle());
  self->state.verify =
    verify ? std::move(verify)
           : [ca = cfg.tls.ca_file](const identity::proof& p, const std::string& challenge) {
               return identity::check(ca, p, challenge);
             };
  replay_journal(self, std::move(cfg), std::move(log));
  self->delayed_send(self, refresh_interval, refresh_atom::value);
  self->set_down_handler([self](const caf::down_msg& dm) { on_down(self, dm); });
  return {
    [self](connect_host_atom, const std::string& name) { connect_host(self, name); },
    [self](refresh_atom) {
      refresh(self);
      self->delayed_send(self, refresh_interval, refresh_atom::value);
    },
    [self](refresh_now_atom) { refresh(self); },
    [self](job_update_atom, const job_record& rec, const migration_progress& progress) {
      auto it = self->state.jobs.find(rec.id);
      if (it == self->state.jobs.end())
        return;
      it->second.record = rec;
      it->second.progress = progress;
    },
    [self](job_done_atom, const job_record& rec) { on_job_done(self, rec); },
    [self](stage_dropped_atom, int64_t id) { on_stage_dropped(self, id); },
    [self](api_get_atom, const std::string& what) { return api_get(self, what); },
    [self](metrics_atom) { return self->state.metrics.render(view_of(self->state)); },
    [self](preflight_atom, int64_t evac_id) { finish_preflight(self, evac_id); },
    [self](source_gone_atom, const std::string& host) { give_up_on_source(self, host); },
    [self](job_step_atom, const std::string& kind) { self->state.metrics.escalation_step(kind); },
    [self](api_migrate_atom, const std::string& guest,
           const std::string& target) -> caf::result<std::string> {
      auto r = api_migrate(self, guest, target, 0);
      if (!r)
        return r.error();
      return *r;
    },
    [self](api_evacuate_atom, const std::string& host) -> caf::result<std::string> {
      auto r = api_evacuate(self, host);
      if (!r)
        return r.error();
      return *r;
    },
    [self](api_create_atom, const std::string& host, const std::string& spec_json) {
      return api_create(self, host, spec_json);
    },
    [self](cancel_atom, int64_t id) { return api_cancel(self, id); },
    [self](api_protect_atom, const std::string& guest, const std::string& secondary) {
      return api_protect(self, guest, secondary);
    },
    [self](api_unprotect_atom, const std::string& guest) { return api_unprotect(self, guest); },
    [self](api_snapshot_atom, const std::string& guest, const std::string& op,
           const std::string& tag) { return api_snapshot(self, guest, op, tag); },
    [self](snapshot_poll_atom, int64_t id) { on_snapshot_poll(self, id); },
  };
}

} // namespace

cluster_api spawn_cluster(caf::actor_system& sys, orchestrator_config cfg,
                          std::shared_ptr<journal> log, caf::actor dialer, host_verifier verify) {
  return sys.spawn(cluster, std::move(cfg), std::move(log), std::move(dialer), std::move(verify));
}

} // namespace ferry
