#include "orchestrator/cluster.hpp"

#include "actors/host_interface.hpp"
#include "common/error.hpp"
#include "orchestrator/guest_spec_json.hpp"
#include "orchestrator/migration_job.hpp"
#include "orchestrator/move_estimate.hpp"
#include "orchestrator/orchestrator_error.hpp"
#include "orchestrator/orchestrator_metrics.hpp"

#include <caf/all.hpp>
#include <caf/io/middleman.hpp>
#include <caf/openssl/manager.hpp>

#include <boost/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <optional>
#include <set>

namespace ferry {

namespace {

namespace json = boost::json;
using connect_host_atom = caf::atom_constant<caf::atom("connhost")>;
using refresh_atom = caf::atom_constant<caf::atom("refresh")>;
// (preflight_atom, evacuation id): read the dirty rates measured for it.
using preflight_atom = caf::atom_constant<caf::atom("preflight")>;

constexpr auto refresh_interval = std::chrono::seconds(1);
constexpr auto request_timeout = std::chrono::seconds(10);
constexpr auto max_backoff = std::chrono::seconds(8);
// calc-dirty-rate's measuring time in the evacuation pre-flight, and how
// long moves wait for its answers at most.
constexpr int64_t preflight_calc_time_s = 1;
constexpr auto preflight_read_after = std::chrono::milliseconds(1300);
constexpr auto preflight_deadline = std::chrono::seconds(4);

struct host_entry {
  agent_address address;
  host_actor handle;
  bool up = false;
  bool connecting = false;
  bool draining = false;
  std::chrono::milliseconds backoff{250};
  host_capacity capacity;
  std::vector<guest_info> guests;
  std::set<std::string> sweeping; // orphaned targets being removed
};

struct job_entry {
  job_record record;
  caf::actor actor;
  std::string progress = "{}";
  bool resume = false; // found unfinished in the journal at start
  // Evacuation order: the estimated duration, refined by a calc-dirty-rate
  // pre-flight; the job waits for it until `preflight_until`.
  double estimate_s = 0;
  std::optional<double> dirty_rate; // bytes/s, from the pre-flight
  std::optional<std::chrono::steady_clock::time_point> preflight_until;
};

struct evacuation_entry {
  evacuation_record record;
  std::set<int64_t> jobs;
};

struct cluster_state {
  orchestrator_config cfg;
  orchestrator_metrics metrics;
  double measured_bandwidth = 0; // bytes/s, over finished migrations
  std::shared_ptr<journal> log;
  std::map<std::string, host_entry> hosts;
  std::map<int64_t, job_entry> jobs; // unfinished and recently finished
  std::map<int64_t, evacuation_entry> evacuations;
};

using cluster_actor = caf::stateful_actor<cluster_state>;

uint64_t planned_inbound_memory(const cluster_state& st, const std::string& host) {
  uint64_t m = 0;
  for (const auto& [id, j] : st.jobs)
    if (j.record.target == host && !job_is_final(j.record.state))
      m += j.record.memory;
  return m;
}

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
  try {
    o["progress"] = json::parse(j.progress);
  } catch (const std::exception&) {
    o["progress"] = json::object{};
  }
  return o;
}

std::optional<double> seconds_at(const json::object& o, std::string_view key) {
  const auto* v = o.if_contains(key);
  if (v == nullptr || !v->is_number())
    return std::nullopt;
  return v->to_number<double>() / 1000.0; // QMP reports milliseconds
}

// Counts a job that has just reached its final state, with the figures of
// its last query-migrate.
void count_finished(cluster_state& st, const job_entry& j) {
  std::optional<double> duration, downtime, limit;
  try {
    const auto v = json::parse(j.progress);
    const auto& o = v.as_object();
    duration = seconds_at(o, "total-time");
    downtime = seconds_at(o, "downtime");
    limit = seconds_at(o, "downtime-limit");
    if (limit && *limit <= 0)
      limit.reset(); // not known (a job resumed after a restart)
  } catch (const std::exception&) {
    // No figures: the job never ran.
  }
  st.metrics.job_finished(j.record.state, duration, downtime, limit);
}

std::optional<uint64_t> count_at(const json::object& o, std::string_view key) {
  const auto* v = o.if_contains(key);
  if (v == nullptr || !v->is_number())
    return std::nullopt;
  return v->to_number<uint64_t>();
}

// A finished migration's average rate: bytes sent over its total time.
double average_rate(const std::string& progress) {
  try {
    const auto v = json::parse(progress);
    const auto& o = v.as_object();
    const double ms = o.at("total-time").to_number<double>();
    const double bytes = o.at("ram").at("transferred").to_number<double>();
    return ms > 0 ? bytes / (ms / 1000.0) : 0;
  } catch (const std::exception&) {
    return 0;
  }
}

cluster_view view_of(const cluster_state& st) {
  cluster_view v;
  for (const auto& [name, h] : st.hosts)
    v.hosts.push_back(host_view{name, h.up, h.draining, h.capacity.memory_total,
                                h.capacity.memory_used, h.capacity.guests});
  for (const auto& [id, j] : st.jobs) {
    migration_view m;
    m.id = id;
    m.guest = j.record.guest;
    m.source = j.record.source;
    m.target = j.record.target;
    m.state = j.record.state;
    m.evacuation = j.record.evacuation;
    try {
      const auto p = json::parse(j.progress);
      const auto* ram = p.as_object().if_contains("ram");
      if (ram != nullptr && ram->is_object()) {
        const auto& r = ram->as_object();
        m.transferred = count_at(r, "transferred");
        m.remaining = count_at(r, "remaining");
        m.passes = count_at(r, "dirty-sync-count");
        if (auto mbps = r.if_contains("mbps"); mbps != nullptr && mbps->is_number())
          m.rate = mbps->to_number<double>() * 1e6 / 8;
      }
    } catch (const std::exception&) {
      // No figures yet.
    }
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
  return v;
}

// Picks a target for `memory` bytes away from `source`: up, not draining, not
// excluded, the most free memory after what is already planned for it.
std::optional<std::string> pick_target(const cluster_state& st, const std::string& source,
                                       uint64_t memory, const std::set<std::string>& exclude) {
  std::optional<std::string> best;
  uint64_t best_free = 0;
  for (const auto& [name, h] : st.hosts) {
    if (!h.up || h.draining || name == source || exclude.count(name) != 0)
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

void try_schedule(cluster_actor* self);

double now_s() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

void connect_host(cluster_actor* self, const std::string& name) {
  auto& entry = self->state.hosts.at(name);
  if (entry.up || entry.connecting)
    return;
  entry.connecting = true;
  auto mm = self->system().openssl_manager().actor_handle();
  self
    ->request(mm, request_timeout, caf::connect_atom_v, entry.address.control.host,
              entry.address.control.port)
    .then(
      [self, name](const caf::node_id&, caf::strong_actor_ptr& ptr, const std::set<std::string>&) {
        auto& h = self->state.hosts.at(name);
        h.connecting = false;
        if (!ptr) {
          self->delayed_send(self, h.backoff, connect_host_atom::value, name);
          return;
        }
        h.handle = caf::actor_cast<host_actor>(std::move(ptr));
        self->monitor(h.handle);
        h.up = true;
        std::fprintf(stderr, "ferry-orchestrator: %.3f host %s is up (%s)\n", now_s(), name.c_str(),
                     caf::to_string(h.handle.node()).c_str());
        h.backoff = std::chrono::milliseconds(250);
        self->send(self, refresh_atom::value);
      },
      [self, name](const caf::error&) {
        auto& h = self->state.hosts.at(name);
        h.connecting = false;
        self->delayed_send(self, h.backoff, connect_host_atom::value, name);
        h.backoff = std::min(std::chrono::milliseconds(max_backoff), h.backoff * 2);
      });
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

void start_job(cluster_actor* self, job_entry& j) {
  auto& st = self->state;
  auto& src = st.hosts.at(j.record.source);
  auto& dst = st.hosts.at(j.record.target);
  if (!j.resume) {
    if (auto ok = st.log->move(j.record, job_state::scheduling, "slot granted"); !ok) {
      j.record.error = describe(ok.error());
      return;
    }
    j.record.state = job_state::scheduling;
  }
  job_context ctx{j.record,      src.handle, dst.handle,       dst.capacity.migration_address,
                  st.cfg.policy, st.log,     caf::actor{self}, j.resume};
  j.actor = spawn_migration_job(self->system(), std::move(ctx));
  self->monitor(j.actor);
  j.resume = false;
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
    return queued_move{j->record.id, j->resume, j->record.priority, j->estimate_s};
  };
  std::sort(ready.begin(), ready.end(), [&key](const job_entry* a, const job_entry* b) {
    return starts_before(key(a), key(b));
  });
  for (auto* j : ready) {
    if (running >= p.max_migrations)
      break;
    auto s = st.hosts.find(j->record.source);
    auto t = st.hosts.find(j->record.target);
    if (s == st.hosts.end() || t == st.hosts.end() || !s->second.up || !t->second.up)
      continue;
    if (out[j->record.source] >= p.max_outbound_per_host ||
        in[j->record.target] >= p.max_inbound_per_host)
      continue;
    start_job(self, *j);
    if (!j->actor)
      continue;
    ++running;
    ++out[j->record.source];
    ++in[j->record.target];
  }
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
  (void) st.log->finish_evacuation(evac_id);
  it->second.record.finished = true;
}

// An evacuation's failed job is tried again on another host.
void retry_elsewhere(cluster_actor* self, const job_record& failed) {
  auto& st = self->state;
  if (static_cast<uint32_t>(failed.attempt) >= st.cfg.policy.evacuation_attempts)
    return;
  // A lost source host took its guests with it: nothing left to move.
  if (auto src = st.hosts.find(failed.source); src == st.hosts.end() || !src->second.up)
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
}

// A target guest that no unfinished job owns is left over from a job whose
// cleanup could not reach its host (or from before a restart): remove it, so
// no guest ever runs twice and no target is orphaned.
void sweep_orphans(cluster_actor* self, const std::string& host) {
  auto& st = self->state;
  auto& h = st.hosts.at(host);
  std::set<std::string> present;
  for (const auto& g : h.guests) {
    present.insert(g.spec.name);
    if (!g.spec.incoming || h.sweeping.count(g.spec.name) != 0)
      continue;
    const bool owned = std::any_of(st.jobs.begin(), st.jobs.end(), [&](const auto& kv) {
      const auto& r = kv.second.record;
      return r.guest == g.spec.name && r.target == host && !job_is_final(r.state);
    });
    if (owned)
      continue;
    // Only a guest still waiting for its memory is an orphan: one whose
    // migration just completed runs (its host may not have noticed yet).
    h.sweeping.insert(g.spec.name);
    const std::string name = g.spec.name;
    self
      ->request(h.handle, request_timeout, qmp_atom::value, name, std::string{"query-status"},
                std::string{})
      .then(
        [self, host, name](const std::string& reply) {
          auto& hs = self->state.hosts.at(host);
          bool waiting = false;
          try {
            auto v = json::parse(reply);
            const auto* r = v.as_object().if_contains("return");
            waiting = r != nullptr && r->is_object() &&
                      r->as_object().at("status").as_string() == "inmigrate";
          } catch (const std::exception&) {
          }
          if (!waiting || !hs.up) {
            hs.sweeping.erase(name);
            return;
          }
          std::fprintf(stderr, "ferry-orchestrator: removing orphaned target '%s' on %s\n",
                       name.c_str(), host.c_str());
          self->request(hs.handle, request_timeout, destroy_atom::value, name)
            .then([](bool) {}, [](const caf::error&) {});
        },
        [self, host, name](const caf::error&) { self->state.hosts.at(host).sweeping.erase(name); });
  }
  for (auto it = h.sweeping.begin(); it != h.sweeping.end();)
    it = present.count(*it) == 0 ? h.sweeping.erase(it) : std::next(it);
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

// Queues one migration; `schedule` false leaves starting it to the caller
// (an evacuation plans all its moves first).
caf::expected<std::string> api_migrate(cluster_actor* self, const std::string& guest,
                                       std::string target, int64_t evacuation,
                                       bool schedule = true) {
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

std::string api_get(cluster_actor* self, const std::string& what) {
  auto& st = self->state;
  json::array out;
  if (what == "hosts") {
    for (const auto& [name, h] : st.hosts)
      out.push_back(json::object{{"name", name},
                                 {"up", h.up},
                                 {"draining", h.draining},
                                 {"memory_total", h.capacity.memory_total},
                                 {"memory_used", h.capacity.memory_used},
                                 {"guests", h.guests.size()}});
  } else if (what == "guests") {
    for (const auto& [name, h] : st.hosts)
      for (const auto& g : h.guests)
        out.push_back(json::object{{"name", g.spec.name},
                                   {"host", name},
                                   {"memory", g.spec.memory},
                                   {"vcpus", g.spec.vcpus},
                                   {"priority", g.spec.priority},
                                   {"incoming", g.spec.incoming}});
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

caf::behavior cluster(cluster_actor* self, orchestrator_config cfg, std::shared_ptr<journal> log) {
  auto& init = self->state;
  init.cfg = std::move(cfg);
  init.log = std::move(log);
  for (const auto& a : init.cfg.agents)
    init.hosts[a.name] = host_entry{a, {}, false, false, false, {}, {}, {}, {}};
  // What the journal says was unfinished when the last orchestrator stopped.
  for (const auto& e : init.log->evacuations(true)) {
    init.evacuations[e.id] = evacuation_entry{e, {}};
    if (auto h = init.hosts.find(e.host); h != init.hosts.end())
      h->second.draining = true;
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
  for (const auto& a : init.cfg.agents)
    connect_host(self, a.name);
  self->delayed_send(self, refresh_interval, refresh_atom::value);
  self->set_down_handler([self](const caf::down_msg& dm) {
    auto& st = self->state;
    // A job actor that ended without reporting a final state (a bug): its
    // journal entry must not stay open for ever.
    for (auto& [id, j] : st.jobs) {
      if (!j.actor || j.actor.address() != dm.source)
        continue;
      j.actor = nullptr;
      if (!job_is_final(j.record.state)) {
        j.record.error = "job ended unexpectedly: " + self->system().render(dm.reason);
        std::fprintf(stderr, "ferry-orchestrator: job %lld: %s\n", static_cast<long long>(id),
                     j.record.error.c_str());
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
      std::fprintf(stderr, "ferry-orchestrator: %.3f host %s is down (%s)\n", now_s(), name.c_str(),
                   self->system().render(dm.reason).c_str());
      h.up = false;
      h.handle = nullptr;
      h.guests.clear();
      self->delayed_send(self, h.backoff, connect_host_atom::value, name);
      // Evacuation moves not yet started towards the lost host go elsewhere;
      // running ones fail on their own (their requests to it fail).
      // Moves not yet started that involve the lost host: from it, they are
      // over (its guests went with it); towards it, evacuation moves are
      // planned again elsewhere. Running ones fail on their own (their
      // requests to it fail).
      std::vector<job_record> replan;
      for (auto& [id, j] : st.jobs)
        if (j.actor && (j.record.source == name || j.record.target == name))
          self->send(j.actor, host_lost_atom::value, name);
      for (auto& [id, j] : st.jobs) {
        if (j.actor || j.record.state != job_state::pending)
          continue;
        if (j.record.source != name && j.record.target != name)
          continue;
        j.record.error = "host " + name + " went down before the move started";
        if (!st.log->move(j.record, job_state::cancelled, j.record.error))
          continue;
        j.record.state = job_state::cancelled;
        count_finished(st, j);
        if (j.record.source != name && j.record.evacuation != 0)
          replan.push_back(j.record);
        if (j.record.evacuation != 0)
          check_evacuation_done(self, j.record.evacuation);
      }
      for (auto& r : replan) {
        r.attempt = 0; // a re-plan, not a failed attempt
        retry_elsewhere(self, r);
      }
    }
    try_schedule(self);
  });
  return {
    [self](connect_host_atom, const std::string& name) { connect_host(self, name); },
    [self](refresh_atom) {
      for (auto& [name, h] : self->state.hosts) {
        if (!h.up)
          continue;
        const std::string n = name;
        self->request(h.handle, request_timeout, list_atom::value)
          .then(
            [self, n](const std::vector<guest_info>& gs) {
              self->state.hosts.at(n).guests = gs;
              sweep_orphans(self, n);
            },
            [](const caf::error&) {});
        self->request(h.handle, request_timeout, capacity_atom::value)
          .then(
            [self, n](const host_capacity& c) {
              self->state.hosts.at(n).capacity = c;
              try_schedule(self);
            },
            [](const caf::error&) {});
      }
      self->delayed_send(self, refresh_interval, refresh_atom::value);
    },
    [self](job_update_atom, const job_record& rec, const std::string& progress) {
      auto it = self->state.jobs.find(rec.id);
      if (it == self->state.jobs.end())
        return;
      it->second.record = rec;
      it->second.progress = progress;
    },
    [self](job_done_atom, const job_record& rec) {
      auto& st = self->state;
      auto it = st.jobs.find(rec.id);
      if (it == st.jobs.end())
        return;
      it->second.record = rec;
      it->second.actor = nullptr;
      count_finished(st, it->second);
      if (rec.state == job_state::succeeded)
        st.measured_bandwidth =
          update_measured_bandwidth(st.measured_bandwidth, average_rate(it->second.progress));
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
      self->send(self, refresh_atom::value);
      try_schedule(self);
    },
    [self](api_get_atom, const std::string& what) { return api_get(self, what); },
    [self](metrics_atom) { return self->state.metrics.render(view_of(self->state)); },
    [self](preflight_atom, int64_t evac_id) { finish_preflight(self, evac_id); },
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
    [self](api_create_atom, const std::string& host,
           const std::string& spec_json) -> caf::result<std::string> {
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
            self->state.hosts.at(host).guests.push_back(info);
            rp.deliver(json::serialize(json::object{{"name", info.spec.name},
                                                    {"host", host},
                                                    {"pid", info.pid},
                                                    {"qmp_socket", info.qmp_socket}}));
          },
          [rp](caf::error& err) mutable {
            rp.deliver(make_orchestrator_error(orchestrator_errc::invalid_request, describe(err)));
          });
      return rp;
    },
    [self](cancel_atom, int64_t id) -> caf::result<std::string> {
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
        j.record.state = job_state::cancelled;
        count_finished(st, j);
        if (j.record.evacuation != 0)
          check_evacuation_done(self, j.record.evacuation);
      }
      return json::serialize(job_json(j));
    },
  };
}

} // namespace

caf::actor spawn_cluster(caf::actor_system& sys, orchestrator_config cfg,
                         std::shared_ptr<journal> log) {
  return sys.spawn(cluster, std::move(cfg), std::move(log));
}

} // namespace ferry
