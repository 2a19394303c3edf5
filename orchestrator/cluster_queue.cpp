// The migration queue: single moves checked and journaled, targets picked by
// free memory, jobs started under the policy's limits, evacuation moves
// retried elsewhere.
#include "orchestrator/cluster_state.hpp"

#include "common/error.hpp"
#include "orchestrator/guest_spec_json.hpp"
#include "orchestrator/migration_job.hpp"
#include "orchestrator/move_estimate.hpp"
#include "orchestrator/orchestrator_error.hpp"

#include <algorithm>
#include <cstdio>

namespace ferry::cluster_detail {

uint64_t planned_inbound_memory(const cluster_state& st, const std::string& host) {
  uint64_t m = 0;
  for (const auto& [id, j] : st.jobs)
    if (j.record.target == host && !job_is_final(j.record.state))
      m += j.record.memory;
  return m;
}

// Picks a target for `memory` bytes away from `source`: up, not draining, not
// excluded, the most free memory after what is already planned for it.
std::optional<std::string> pick_target(const cluster_state& st, const std::string& source,
                                       uint64_t memory, const std::set<std::string>& exclude) {
  std::optional<std::string> best;
  uint64_t best_free = 0;
  for (const auto& [name, h] : st.hosts) {
    if (!h.up || h.degraded() || h.draining || name == source || exclude.count(name) != 0)
      continue;
    const uint64_t used = h.capacity.memory_used + planned_inbound_memory(st, name);
    const uint64_t free = h.capacity.memory_total > used ? h.capacity.memory_total - used : 0;
    if (free >= memory && (!best || free > best_free)) {
      best = name;
      best_free = free;
    }
  }
  return best;
}

caf::expected<job_record> enqueue(cluster_actor* self, job_record job) {
  auto rec = self->state.log->add_job(std::move(job));
  if (!rec)
    return rec.error();
  job_entry entry;
  entry.record = *rec;
  self->state.jobs[rec->id] = std::move(entry);
  return *rec;
}

migration_job_actor spawn_job(cluster_actor* self, const job_entry& j, bool staged) {
  auto& st = self->state;
  auto& src = st.hosts.at(j.record.source);
  auto& dst = st.hosts.at(j.record.target);
  job_context ctx{j.record,
                  src.handle,
                  dst.handle,
                  dst.capacity.migration_address,
                  st.cfg.policy,
                  st.log,
                  job_parent_actor{self},
                  j.resume,
                  staged};
  auto actor = spawn_migration_job(self->system(), std::move(ctx));
  self->monitor(actor);
  return actor;
}

void start_job(cluster_actor* self, job_entry& j) {
  auto& st = self->state;
  if (!j.resume) {
    if (auto ok = st.log->move(j.record, job_state::scheduling, "slot granted"); !ok) {
      j.record.error = describe(ok.error());
      return;
    }
    j.record.state = job_state::scheduling;
  }
  if (j.stager) {
    j.actor = std::move(j.stager);
    j.stager = nullptr;
    self->send(j.actor, go_atom::value);
  } else {
    j.actor = spawn_job(self, j, false);
  }
  j.resume = false;
}

void drop_stage(cluster_actor* self, job_entry& j) {
  if (!j.stager)
    return;
  self->send(j.stager, cancel_atom::value);
  j.stager = nullptr;
}

// The moves next in line get ready while they wait: those the scheduler
// would start in the next two rounds if every running move ended now (queue
// order, twice the limits), so that whichever slot frees, the move it goes
// to is ready — a target takes about as long to create as a small move
// takes to run, so one round ahead is not enough. Staged jobs that fell out
// of that set meanwhile wait on; never more than twice max_migrations are
// staged.
void stage_next(cluster_actor* self, const std::vector<job_entry*>& waiting) {
  constexpr uint32_t rounds = 2;
  auto& st = self->state;
  const auto& p = st.cfg.policy;
  if (!p.prepare_ahead)
    return;
  uint32_t staged = 0;
  for (const auto& [id, j] : st.jobs)
    if (j.stager)
      ++staged;
  std::map<std::string, uint32_t> out, in;
  uint32_t next = 0;
  for (auto* j : waiting) {
    if (next >= rounds * p.max_migrations || staged >= rounds * p.max_migrations)
      return;
    if (out[j->record.source] >= rounds * p.max_outbound_per_host ||
        in[j->record.target] >= rounds * p.max_inbound_per_host)
      continue;
    ++next;
    ++out[j->record.source];
    ++in[j->record.target];
    if (j->actor || j->stager || j->stage_tried || j->resume ||
        j->record.state != job_state::pending)
      continue;
    auto s = st.hosts.find(j->record.source);
    auto t = st.hosts.find(j->record.target);
    if (s == st.hosts.end() || t == st.hosts.end() || !s->second.up || !t->second.up ||
        s->second.degraded() || t->second.degraded())
      continue;
    j->stager = spawn_job(self, *j, true);
    j->stage_tried = true;
    ++staged;
  }
}

void try_schedule(cluster_actor* self) {
  auto& st = self->state;
  const auto& p = st.cfg.policy;
  std::map<std::string, uint32_t> out, in;
  uint32_t running = 0;
  for (const auto& [id, j] : st.jobs)
    if (j.actor) {
      ++running;
      ++out[j.record.source];
      ++in[j.record.target];
    }
  // Jobs found unfinished at start resume first; then pending ones by
  // priority and estimated duration (move_estimate). A move whose dirty-rate
  // pre-flight is still out waits for it (bounded by its deadline).
  const auto now = std::chrono::steady_clock::now();
  std::vector<job_entry*> ready;
  for (auto& [id, j] : st.jobs) {
    if (j.preflight_until && now >= *j.preflight_until)
      j.preflight_until.reset();
    if (!j.actor && !j.preflight_until && (j.resume || j.record.state == job_state::pending))
      ready.push_back(&j);
  }
  auto key = [](const job_entry* j) {
    return queued_move{j->record.id, j->resume, j->record.priority, static_cast<bool>(j->stager),
                       j->estimate_s};
  };
  std::sort(ready.begin(), ready.end(), [&key](const job_entry* a, const job_entry* b) {
    return starts_before(key(a), key(b));
  });
  std::vector<job_entry*> waiting;
  for (auto* j : ready) {
    if (running >= p.max_migrations) {
      waiting.push_back(j);
      continue;
    }
    auto s = st.hosts.find(j->record.source);
    auto t = st.hosts.find(j->record.target);
    if (s == st.hosts.end() || t == st.hosts.end() || !s->second.up || !t->second.up)
      continue;
    if (out[j->record.source] >= p.max_outbound_per_host ||
        in[j->record.target] >= p.max_inbound_per_host) {
      waiting.push_back(j);
      continue;
    }
    start_job(self, *j);
    if (!j->actor)
      continue;
    ++running;
    ++out[j->record.source];
    ++in[j->record.target];
  }
  stage_next(self, waiting);
}

void check_evacuation_done(cluster_actor* self, int64_t evac_id) {
  auto& st = self->state;
  auto it = st.evacuations.find(evac_id);
  if (it == st.evacuations.end())
    return;
  for (auto id : it->second.jobs)
    if (auto j = st.jobs.find(id); j != st.jobs.end() && !job_is_final(j->second.record.state))
      return;
  // Nor may anything still be on its way to the drained host.
  for (const auto& [id, j] : st.jobs)
    if (j.record.target == it->second.record.host && !job_is_final(j.record.state))
      return;
  // Nor may a COLO pair keep a side there (cluster_pairs moves them).
  for (const auto& [guest, pe] : st.pairs)
    if (pe.record.primary == it->second.record.host ||
        pe.record.secondary == it->second.record.host)
      return;
  (void) st.log->finish_evacuation(evac_id);
  it->second.record.finished = true;
}

// An evacuation's failed job is tried again on another host.
void retry_elsewhere(cluster_actor* self, const job_record& failed) {
  auto& st = self->state;
  if (static_cast<uint32_t>(failed.attempt) >= st.cfg.policy.evacuation_attempts)
    return;
  std::set<std::string> tried;
  for (const auto& [id, j] : st.jobs)
    if (j.record.evacuation == failed.evacuation && j.record.guest == failed.guest)
      tried.insert(j.record.target);
  auto target = pick_target(st, failed.source, failed.memory, tried);
  if (!target)
    target = pick_target(st, failed.source, failed.memory, {});
  if (!target)
    return;
  job_record next = failed;
  next.target = *target;
  next.error.clear();
  next.attempt = failed.attempt + 1;
  if (auto rec = enqueue(self, next))
    st.evacuations[failed.evacuation].jobs.insert(rec->id);
  // Off a host that is down: it waits for the host, as pending moves do.
  if (auto src = st.hosts.find(failed.source); src != st.hosts.end() && !src->second.up)
    give_up_on_source(self, failed.source);
}

void give_up_on_source(cluster_actor* self, const std::string& host) {
  auto& st = self->state;
  auto h = st.hosts.find(host);
  if (h == st.hosts.end() || h->second.up)
    return; // back: its moves go ahead
  const auto grace = std::chrono::seconds(st.cfg.policy.source_return_s);
  const auto waited = std::chrono::steady_clock::now() - h->second.down_since;
  if (waited < grace) {
    self->delayed_send(self, std::chrono::duration_cast<std::chrono::milliseconds>(grace - waited),
                       source_gone_atom::value, host);
    return;
  }
  std::set<int64_t> evacuations;
  for (auto& [id, j] : st.jobs) {
    if (j.actor || j.record.state != job_state::pending || j.record.source != host)
      continue;
    j.record.error = "host " + host + " did not come back within " +
                     std::to_string(st.cfg.policy.source_return_s) + " s";
    drop_stage(self, j);
    if (!st.log->move(j.record, job_state::cancelled, j.record.error))
      continue;
    j.record.state = job_state::cancelled;
    count_finished(st, j);
    if (j.record.evacuation != 0)
      evacuations.insert(j.record.evacuation);
  }
  for (auto e : evacuations)
    check_evacuation_done(self, e);
}

// Journals and queues a move of `guest` from `source` to `target`; an
// evacuation (id != 0) counts it among its own.
caf::expected<job_record> queue_move(cluster_actor* self, const std::string& guest,
                                     const std::string& source, const std::string& target,
                                     uint64_t memory, int32_t priority, int64_t evacuation) {
  job_record job;
  job.guest = guest;
  job.source = source;
  job.target = target;
  job.memory = memory;
  job.priority = priority;
  job.evacuation = evacuation;
  auto rec = enqueue(self, job);
  if (rec && evacuation != 0)
    self->state.evacuations[evacuation].jobs.insert(rec->id);
  return rec;
}

// Queues a move of `guest` off `source` to the host with the most room.
caf::expected<job_record> plan_move(cluster_actor* self, const std::string& guest,
                                    const std::string& source, uint64_t memory, int32_t priority,
                                    int64_t evacuation) {
  auto target = pick_target(self->state, source, memory, {});
  if (!target)
    return make_orchestrator_error(orchestrator_errc::invalid_request,
                                   "no host has room for '" + guest + "'");
  return queue_move(self, guest, source, *target, memory, priority, evacuation);
}

// Queues one migration; `schedule` false leaves starting it to the caller
// (an evacuation plans all its moves first).
caf::expected<std::string> api_migrate(cluster_actor* self, const std::string& guest,
                                       std::string target, int64_t evacuation, bool schedule) {
  auto& st = self->state;
  if (!target.empty() && st.hosts.count(target) == 0)
    return make_orchestrator_error(orchestrator_errc::invalid_request,
                                   "unknown host '" + target + "'");
  const host_entry* source = nullptr;
  const guest_info* info = nullptr;
  for (const auto& [name, h] : st.hosts)
    for (const auto& g : h.guests)
      if (g.spec.name == guest && !g.spec.incoming) {
        source = &h;
        info = &g;
      }
  if (source == nullptr)
    return make_orchestrator_error(orchestrator_errc::invalid_request,
                                   "no host runs a guest named '" + guest + "'");
  for (const auto& [id, j] : st.jobs)
    if (j.record.guest == guest && !job_is_final(j.record.state))
      return make_orchestrator_error(orchestrator_errc::conflict,
                                     "guest '" + guest + "' is already being migrated (job " +
                                       std::to_string(id) + ")");
  if (in_pair(st, guest))
    return make_orchestrator_error(orchestrator_errc::conflict,
                                   "guest '" + guest +
                                     "' is in a COLO pair: unprotect it before moving it");
  const std::string source_name = source->address.name;
  if (target.empty()) {
    auto t = pick_target(st, source_name, info->spec.memory, {});
    if (!t)
      return make_orchestrator_error(orchestrator_errc::invalid_request,
                                     "no host has room for '" + guest + "'");
    target = *t;
  }
  auto t = st.hosts.find(target);
  if (t == st.hosts.end())
    return make_orchestrator_error(orchestrator_errc::invalid_request,
                                   "unknown host '" + target + "'");
  if (target == source_name)
    return make_orchestrator_error(orchestrator_errc::invalid_request,
                                   "guest '" + guest + "' already runs on " + target);
  if (!t->second.up)
    return make_orchestrator_error(orchestrator_errc::host_down, "host " + target + " is down");
  if (t->second.draining)
    return make_orchestrator_error(orchestrator_errc::conflict,
                                   "host " + target + " is being evacuated");
  auto rec = queue_move(self, guest, source_name, target, info->spec.memory, info->spec.priority,
                        evacuation);
  if (!rec)
    return rec.error();
  if (schedule)
    try_schedule(self);
  return json::serialize(job_json(st.jobs.at(rec->id)));
}

} // namespace ferry::cluster_detail
