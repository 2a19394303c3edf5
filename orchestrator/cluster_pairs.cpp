// COLO pairs, tended by the cluster actor (docs/orchestrator.md, "COLO
// pairs"). Protecting makes a secondary on another host and starts the pair
// (x-colo on both sides, the primary's migrate). Every refresh each pair's
// sides are asked how they stand and the pair moves on by its table
// (pair_state): a secondary that took over is the guest now (failover: the
// old copy retired, protection made again on a host the policy picks); a
// primary whose host has been out of reach past its fence timeout has its
// secondary promoted; a primary that fenced itself or lost its secondary is
// told to run on alone. Each transition is journaled before it is acted on,
// and no copy that runs is ever destroyed.
#include "orchestrator/cluster_state.hpp"

#include "common/error.hpp"
#include "common/log.hpp"
#include "orchestrator/orchestrator_error.hpp"

#include <algorithm>
#include <functional>
#include <memory>
#include <utility>

namespace ferry::cluster_detail {

namespace {

using clock_type = std::chrono::steady_clock;
// A pair not in COLO on both sides this long after protecting began fails
// the attempt (it is tried again, backing off).
constexpr auto protect_deadline = std::chrono::seconds(120);
// The primary's host out of reach this much longer than the fence timeout:
// its guest has paused itself, so the secondary may run.
constexpr auto fence_margin = std::chrono::seconds(1);
constexpr auto max_pair_backoff = std::chrono::seconds(30);
// A primary that left COLO while its secondary still says colo: the
// secondary gets this long to hear it before it is removed anyway.
constexpr auto secondary_grace = std::chrono::seconds(5);
constexpr auto status_timeout = std::chrono::seconds(2);
// Checkpoints every 200 ms: output held at most that long (plus a
// checkpoint), at a few pages' copy per checkpoint for an idle guest.
constexpr uint64_t checkpoint_delay_ms = 200;

using answer = std::function<void(caf::expected<json::value>)>;

std::string desc_of(const json::object& err) {
  const auto* d = err.if_contains("desc");
  return d != nullptr && d->is_string() ? std::string{d->as_string()} : "?";
}

// One QMP command on `guest` through `host`'s actor: its "return", or why not.
void host_qmp(cluster_actor* self, const std::string& host, const std::string& guest,
              const std::string& command, const json::object& args, answer done,
              std::chrono::seconds timeout = request_timeout) {
  auto h = self->state.hosts.find(host);
  if (h == self->state.hosts.end() || !h->second.up) {
    done(make_orchestrator_error(orchestrator_errc::host_down, "host " + host + " is down"));
    return;
  }
  self
    ->request(h->second.handle, timeout, qmp_atom::value, guest, command, json::serialize(args))
    .then(
      [done, command](const std::string& text) {
        boost::system::error_code ec;
        auto v = json::parse(text, ec);
        if (ec || !v.is_object()) {
          done(make_orchestrator_error(orchestrator_errc::invalid_request,
                                       command + ": malformed reply"));
          return;
        }
        const auto& o = v.as_object();
        if (const auto* e = o.if_contains("error"); e != nullptr && e->is_object()) {
          done(make_orchestrator_error(orchestrator_errc::invalid_request,
                                       command + ": " + desc_of(e->as_object())));
          return;
        }
        const auto* r = o.if_contains("return");
        done(r != nullptr ? *r : json::value{});
      },
      [done, command](const caf::error& err) {
        done(make_orchestrator_error(orchestrator_errc::host_down, command + ": " + describe(err)));
      });
}

struct qmp_step {
  std::string command;
  json::object args;
};

// `steps` on `guest` one after the other; `done` gets the first error, or "".
void host_steps(cluster_actor* self, const std::string& host, const std::string& guest,
                std::shared_ptr<std::vector<qmp_step>> steps, size_t i,
                std::function<void(const std::string&)> done) {
  if (i == steps->size()) {
    done({});
    return;
  }
  const auto& s = (*steps)[i];
  host_qmp(self, host, guest, s.command, s.args,
           [self, host, guest, steps, i, done](caf::expected<json::value> r) {
             if (!r)
               done(describe(r.error()));
             else
               host_steps(self, host, guest, steps, i + 1, done);
           });
}

std::string status_of(const caf::expected<json::value>& r) {
  if (!r || !r->is_object())
    return {};
  const auto* s = r->as_object().if_contains("status");
  return s != nullptr && s->is_string() ? std::string{s->as_string()} : "none";
}

bool host_up(const cluster_state& st, const std::string& host) {
  auto h = st.hosts.find(host);
  return h != st.hosts.end() && h->second.up;
}

// The pair of `guest` still the one a callback was started for.
pair_entry* find_pair(cluster_actor* self, const std::string& guest, int64_t id) {
  auto it = self->state.pairs.find(guest);
  return it != self->state.pairs.end() && it->second.record.id == id ? &it->second : nullptr;
}

// Journals the transition, then lets the caller act (false: refused; the
// pair stays where it was, said in the log).
bool move(cluster_actor* self, pair_entry& pe, pair_state to, const std::string& note) {
  if (auto ok = self->state.log->move_pair(pe.record, to, note); !ok) {
    log::error("COLO pair of '{}': {}", pe.record.guest, describe(ok.error()));
    return false;
  }
  log::info("COLO pair of '{}': {} -> {}: {}", pe.record.guest, to_string(pe.record.state),
            to_string(to), note);
  pe.since = clock_type::now();
  if (pe.record.state == pair_state::protected_)
    pe.unprotected_since = pe.since; // exposed from here until protected again
  pe.record.state = to;
  return true;
}

// A copy of `guest` on `host` that does not run (a secondary, a fenced or
// superseded primary) goes; one that runs is never touched.
void retire_copy(cluster_actor* self, const std::string& host, const std::string& guest,
                 std::function<void()> then = [] {}) {
  host_qmp(self, host, guest, "query-status", {},
           [self, host, guest, then](caf::expected<json::value> r) {
             const std::string run = status_of(r);
             auto h = self->state.hosts.find(host);
             if (run.empty() || run == "running" || h == self->state.hosts.end() || !h->second.up) {
               if (run == "running")
                 log::error("COLO pair of '{}': a running copy on {} is left alone", guest, host);
               then();
               return;
             }
             self->request(h->second.handle, request_timeout, destroy_atom::value, guest)
               .then([then](bool) { then(); }, [then](const caf::error&) { then(); });
           });
}

void start_protect(cluster_actor* self, pair_entry& pe);

// A protection attempt that did not get the pair into COLO: the primary's
// first copy stopped, the secondary's guest removed (it never ran), the
// pair unprotected until the next try.
void protect_failed(cluster_actor* self, const std::string& guest, int64_t id,
                    const std::string& why) {
  auto* pe = find_pair(self, guest, id);
  if (pe == nullptr)
    return;
  pe->busy = true;
  const std::string secondary = pe->record.secondary;
  host_qmp(self, pe->record.primary, guest, "migrate_cancel", {},
           [self, guest, id, secondary, why](caf::expected<json::value>) {
             retire_copy(self, secondary, guest, [self, guest, id, why] {
               auto* p = find_pair(self, guest, id);
               if (p == nullptr)
                 return;
               p->busy = false;
               p->record.secondary.clear();
               p->record.error = why;
               (void) move(self, *p, pair_state::unprotected, why);
               p->next_try = clock_type::now() + p->backoff;
               p->backoff = std::min(max_pair_backoff, p->backoff * 2);
             });
           });
}

// The secondary's guest exists and listens: x-colo on both sides, then the
// primary's migrate (its first whole copy, then checkpoints).
void configure_pair(cluster_actor* self, const std::string& guest, int64_t id, uint16_t port) {
  auto* pe = find_pair(self, guest, id);
  if (pe == nullptr)
    return;
  const auto& pol = self->state.cfg.policy;
  const auto& r = pe->record;
  const std::string address = self->state.hosts.at(r.secondary).capacity.migration_address;
  json::array caps{json::object{{"capability", "events"}, {"state", true}},
                   json::object{{"capability", "x-colo"}, {"state", true}},
                   json::object{{"capability", "postcopy-ram"}, {"state", false}},
                   json::object{{"capability", "multifd"}, {"state", pol.multifd_channels > 0}}};
  json::object in_params, out_params{{"x-checkpoint-delay", checkpoint_delay_ms},
                                     {"max-bandwidth", pol.max_bandwidth},
                                     {"downtime-limit", pol.downtime_limit_ms}};
  if (pol.multifd_channels > 0) {
    in_params["multifd-channels"] = pol.multifd_channels;
    out_params["multifd-channels"] = pol.multifd_channels;
  }
  if (pol.migration_tls) {
    in_params["tls-creds"] = migration_tls_in;
    in_params["tls-authz"] = migration_authz;
    out_params["tls-creds"] = migration_tls_out;
    out_params["tls-hostname"] = r.secondary;
  }
  const std::string uri = "tcp:" + address + ":" + std::to_string(port);
  auto in = std::make_shared<std::vector<qmp_step>>(std::vector<qmp_step>{
    {"migrate-set-capabilities", {{"capabilities", caps}}},
    {"migrate-set-parameters", in_params},
    {"migrate-incoming", {{"uri", uri}}}});
  auto out = std::make_shared<std::vector<qmp_step>>(
    std::vector<qmp_step>{{"migrate-set-capabilities", {{"capabilities", caps}}},
                          {"migrate-set-parameters", out_params},
                          {"migrate", {{"uri", uri}}}});
  const std::string primary = r.primary;
  host_steps(self, r.secondary, guest, in, 0,
             [self, guest, id, primary, out](const std::string& why) {
               if (!why.empty()) {
                 protect_failed(self, guest, id, "the secondary: " + why);
                 return;
               }
               host_steps(self, primary, guest, out, 0, [self, guest, id](const std::string& why2) {
                 if (!why2.empty()) {
                   protect_failed(self, guest, id, "the primary: " + why2);
                   return;
                 }
                 if (auto* p = find_pair(self, guest, id))
                   p->busy = false; // the rounds wait for colo on both sides
               });
             });
}

void start_protect(cluster_actor* self, pair_entry& pe) {
  auto& st = self->state;
  const auto& r = pe.record;
  pe.busy = true;
  pe.attempt = true;
  pe.since = clock_type::now();
  const auto& on_primary = st.hosts.at(r.primary).guests;
  auto g = std::find_if(on_primary.begin(), on_primary.end(),
                        [&](const guest_info& i) { return i.spec.name == r.guest; });
  if (g == on_primary.end() || !host_up(st, r.secondary)) {
    protect_failed(self, r.guest, r.id,
                   g == on_primary.end() ? "the guest is not on " + r.primary
                                         : "host " + r.secondary + " is down");
    return;
  }
  guest_spec spec = g->spec;
  spec.incoming = true;
  spec.mem_path.clear(); // the secondary's RAM is its own
  spec.migration_peer = r.primary;
  const std::string guest = r.guest;
  const int64_t id = r.id;
  self->request(st.hosts.at(r.secondary).handle, create_request_timeout, create_atom::value, spec)
    .then(
      [self, guest, id](const guest_info& info) {
        if (auto* p = find_pair(self, guest, id)) {
          p->secondary_created = true;
          configure_pair(self, guest, id, info.migration_port);
        }
      },
      [self, guest, id](const caf::error& err) {
        protect_failed(self, guest, id, "creating the secondary: " + describe(err));
      });
}

// The secondary runs the guest now: it is the primary; the old copy goes
// where it can, and protection is made again.
void fail_over(cluster_actor* self, pair_entry& pe, const std::string& why) {
  const std::string old = pe.record.primary;
  pe.record.primary = pe.record.secondary;
  pe.record.secondary.clear();
  pe.record.error = why;
  ++pe.record.failovers;
  if (!move(self, pe, pair_state::failing_over, why + "; the guest runs on " + pe.record.primary))
    return;
  ++self->state.colo_failovers;
  pe.busy = true;
  const std::string guest = pe.record.guest;
  const int64_t id = pe.record.id;
  auto done = [self, guest, id, old] {
    auto* p = find_pair(self, guest, id);
    if (p == nullptr)
      return;
    p->busy = false;
    (void) move(self, *p, pair_state::unprotected,
                "runs on " + p->record.primary + (host_up(self->state, old) ? "" : "; " + old +
                                                                               " out of reach"));
    p->next_try = clock_type::now();
    p->backoff = std::chrono::seconds(2);
  };
  if (host_up(self->state, old))
    retire_copy(self, old, guest, done);
  else
    done();
}

// COLO ended with the primary running alone: the secondary goes.
void drop_secondary(cluster_actor* self, pair_entry& pe, const std::string& why) {
  pe.busy = true;
  const std::string guest = pe.record.guest;
  const int64_t id = pe.record.id;
  retire_copy(self, pe.record.secondary, guest, [self, guest, id, why] {
    auto* p = find_pair(self, guest, id);
    if (p == nullptr)
      return;
    p->busy = false;
    p->record.secondary.clear();
    p->record.error = why;
    p->primary_left.reset();
    (void) move(self, *p, pair_state::unprotected, why);
    p->next_try = clock_type::now() + std::chrono::seconds(1);
  });
}

// x-colo-lost-heartbeat on `host`'s copy: COLO ends there, that copy runs.
void lost_heartbeat(cluster_actor* self, pair_entry& pe, const std::string& host,
                    const std::string& why) {
  log::warn("COLO pair of '{}': x-colo-lost-heartbeat on {}: {}", pe.record.guest, host, why);
  pe.busy = true;
  const std::string guest = pe.record.guest;
  const int64_t id = pe.record.id;
  host_qmp(self, host, guest, "x-colo-lost-heartbeat", {},
           [self, guest, id](caf::expected<json::value>) {
             if (auto* p = find_pair(self, guest, id))
               p->busy = false; // the next round sees where it went
           });
}

// Both sides in COLO, until one is lost. `prim`/`sec`: their migration
// statuses ("" out of reach); `run`: the primary's run state.
void judge_protected(cluster_actor* self, pair_entry& pe, const std::string& prim,
                     const std::string& run, const std::string& sec) {
  auto& st = self->state;
  const auto& r = pe.record;
  const auto now = clock_type::now();
  if (sec == "completed") {
    fail_over(self, pe, "the secondary on " + r.secondary + " took over");
  } else if (prim == "colo" && run == "colo") {
    lost_heartbeat(self, pe, r.primary, "the primary fenced itself: its secondary went silent");
  } else if (!host_up(st, r.primary) && sec == "colo") {
    const auto fence = std::chrono::milliseconds(colo_fence_ms) + fence_margin;
    if (now - st.hosts.at(r.primary).down_since >= fence)
      lost_heartbeat(self, pe, r.secondary,
                     "host " + r.primary + " out of reach past the fence timeout");
  } else if (!host_up(st, r.secondary) && prim == "colo") {
    lost_heartbeat(self, pe, r.primary, "host " + r.secondary + " out of reach");
  } else if (!prim.empty() && prim != "colo") {
    if (sec != "colo" || (pe.primary_left && now - *pe.primary_left >= secondary_grace))
      drop_secondary(self, pe, "COLO ended on the primary (" + prim + "); it runs alone");
    else if (!pe.primary_left)
      pe.primary_left = now;
  }
}

// Protecting: the attempt under way until both sides say colo.
void judge_protecting(cluster_actor* self, pair_entry& pe, const std::string& prim,
                      const std::string& sec) {
  if (prim == "colo" && sec == "colo") {
    pe.backoff = std::chrono::seconds(2);
    pe.record.error.clear();
    (void) move(self, pe, pair_state::protected_, "checkpoints flow to " + pe.record.secondary);
  } else if (prim == "failed" || sec == "failed") {
    protect_failed(self, pe.record.guest, pe.record.id,
                   std::string{"the first copy failed on the "} +
                     (prim == "failed" ? "primary" : "secondary"));
  } else if (clock_type::now() - pe.since > protect_deadline) {
    protect_failed(self, pe.record.guest, pe.record.id, "not in COLO within 120 s");
  }
}

// Asks both sides how they stand (and the primary whether it runs), then
// judges the pair.
void poll_pair(cluster_actor* self, pair_entry& pe) {
  struct round {
    std::string prim, run, sec;
    int left = 3;
  };
  auto rd = std::make_shared<round>();
  pe.busy = true;
  const std::string guest = pe.record.guest;
  const int64_t id = pe.record.id;
  auto answered = [self, guest, id, rd] {
    if (--rd->left != 0)
      return;
    auto* p = find_pair(self, guest, id);
    if (p == nullptr)
      return;
    p->busy = false;
    if (p->record.state == pair_state::protected_)
      judge_protected(self, *p, rd->prim, rd->run, rd->sec);
    else
      judge_protecting(self, *p, rd->prim, rd->sec);
  };
  host_qmp(
    self, pe.record.primary, guest, "query-migrate", {},
    [rd, answered](caf::expected<json::value> r) {
      rd->prim = status_of(r);
      answered();
    },
    status_timeout);
  host_qmp(
    self, pe.record.primary, guest, "query-status", {},
    [rd, answered](caf::expected<json::value> r) {
      rd->run = status_of(r);
      answered();
    },
    status_timeout);
  host_qmp(
    self, pe.record.secondary, guest, "query-migrate", {},
    [rd, answered](caf::expected<json::value> r) {
      rd->sec = status_of(r);
      answered();
    },
    status_timeout);
}

// Unprotected: a new secondary on the host the policy picks (most free
// memory, not the primary's, none that still holds a copy of the guest).
void re_protect(cluster_actor* self, pair_entry& pe) {
  auto& st = self->state;
  const auto& r = pe.record;
  if (!host_up(st, r.primary) || clock_type::now() < pe.next_try)
    return;
  uint64_t memory = 0;
  std::set<std::string> exclude;
  for (const auto& [name, h] : st.hosts)
    for (const auto& g : h.guests)
      if (g.spec.name == r.guest) {
        exclude.insert(name);
        memory = g.spec.memory;
      }
  auto pick = pick_target(st, r.primary, memory, exclude);
  if (!pick) {
    pe.record.error = "no host can take a secondary";
    pe.next_try = clock_type::now() + pe.backoff;
    pe.backoff = std::min(max_pair_backoff, pe.backoff * 2);
    return;
  }
  pe.record.secondary = *pick;
  if (!move(self, pe, pair_state::re_protecting, "a secondary on " + *pick))
    return;
  start_protect(self, pe);
}

// Copies of a pair's guest on hosts that are neither of its sides (an old
// primary whose host came back): they go, unless one runs.
void retire_strays(cluster_actor* self, const pair_entry& pe) {
  auto& st = self->state;
  for (auto& [name, h] : st.hosts) {
    if (!h.up || name == pe.record.primary || name == pe.record.secondary ||
        h.sweeping.count(pe.record.guest) != 0)
      continue;
    const bool holds = std::any_of(h.guests.begin(), h.guests.end(), [&](const guest_info& g) {
      return g.spec.name == pe.record.guest;
    });
    if (!holds)
      continue;
    h.sweeping.insert(pe.record.guest);
    log::warn("COLO pair of '{}': retiring its stale copy on {}", pe.record.guest, name);
    const std::string host = name;
    const std::string guest = pe.record.guest;
    retire_copy(self, host, guest, [self, host, guest] {
      if (auto it = self->state.hosts.find(host); it != self->state.hosts.end())
        it->second.sweeping.erase(guest);
    });
  }
}

json::object pair_json(const pair_entry& pe) {
  const auto& r = pe.record;
  json::object o{{"guest", r.guest},
                 {"primary", r.primary},
                 {"secondary", r.secondary},
                 {"state", std::string{to_string(r.state)}},
                 {"failovers", r.failovers}};
  if (!r.error.empty())
    o["error"] = r.error;
  if (r.state != pair_state::protected_)
    o["unprotected_s"] =
      std::chrono::duration<double>(clock_type::now() - pe.unprotected_since).count();
  return o;
}

} // namespace

void tend_pairs(cluster_actor* self) {
  for (auto& [guest, pe] : self->state.pairs) {
    if (pe.busy)
      continue;
    switch (pe.record.state) {
      case pair_state::protecting:
      case pair_state::re_protecting:
        // An attempt an earlier orchestrator began is not known here: it
        // is undone and made again.
        if (!pe.attempt)
          protect_failed(self, guest, pe.record.id, "the orchestrator restarted while protecting");
        else
          poll_pair(self, pe);
        break;
      case pair_state::protected_:
        retire_strays(self, pe);
        poll_pair(self, pe);
        break;
      case pair_state::failing_over:
        // Journaled with the survivor as primary; an orchestrator that
        // stopped mid-way finishes it.
        (void) move(self, pe, pair_state::unprotected, "runs on " + pe.record.primary);
        break;
      case pair_state::unprotected:
        retire_strays(self, pe);
        re_protect(self, pe);
        break;
      case pair_state::ended:
        break;
    }
  }
}

caf::result<std::string> api_protect(cluster_actor* self, const std::string& guest,
                                     const std::string& secondary) {
  auto& st = self->state;
  if (auto it = st.pairs.find(guest); it != st.pairs.end())
    return make_orchestrator_error(orchestrator_errc::conflict,
                                   "guest '" + guest + "' is already in a COLO pair (" +
                                     std::string{to_string(it->second.record.state)} + ")");
  const bool moving = std::any_of(st.jobs.begin(), st.jobs.end(), [&](const auto& kv) {
    return kv.second.record.guest == guest && !job_is_final(kv.second.record.state);
  });
  if (moving)
    return make_orchestrator_error(orchestrator_errc::conflict,
                                   "guest '" + guest + "' is being migrated");
  std::vector<std::string> where;
  uint64_t memory = 0;
  for (const auto& [name, h] : st.hosts)
    for (const auto& g : h.guests)
      if (g.spec.name == guest) {
        where.push_back(name);
        memory = g.spec.memory;
      }
  if (where.size() != 1)
    return make_orchestrator_error(
      orchestrator_errc::invalid_request,
      where.empty() ? "no guest '" + guest + "' on a host that is up"
                    : "guest '" + guest + "' is on more than one host: protect it once it is on one");
  std::string to = secondary;
  if (to.empty()) {
    auto pick = pick_target(st, where[0], memory, {});
    if (!pick)
      return make_orchestrator_error(orchestrator_errc::conflict, "no host can take a secondary");
    to = *pick;
  } else if (st.hosts.count(to) == 0) {
    return make_orchestrator_error(orchestrator_errc::invalid_request,
                                   "unknown host '" + to + "'");
  } else if (to == where[0]) {
    return make_orchestrator_error(orchestrator_errc::invalid_request,
                                   "the secondary must be on another host than " + to);
  } else if (!host_up(st, to)) {
    return make_orchestrator_error(orchestrator_errc::host_down, "host " + to + " is down");
  }
  pair_record r;
  r.guest = guest;
  r.primary = where[0];
  r.secondary = to;
  auto added = st.log->add_pair(r);
  if (!added)
    return added.error();
  auto& pe = st.pairs[guest];
  pe.record = *added;
  pe.unprotected_since = clock_type::now();
  start_protect(self, pe);
  return json::serialize(pair_json(pe));
}

caf::result<std::string> api_unprotect(cluster_actor* self, const std::string& guest) {
  auto& st = self->state;
  auto it = st.pairs.find(guest);
  if (it == st.pairs.end())
    return make_orchestrator_error(orchestrator_errc::invalid_request,
                                   "guest '" + guest + "' is not in a COLO pair");
  auto& pe = it->second;
  if (pe.record.state == pair_state::failing_over || pe.unprotect_requested)
    return make_orchestrator_error(orchestrator_errc::conflict,
                                   "the pair of '" + guest +
                                     "' is failing over or ending: try again in a moment");
  pe.unprotect_requested = true;
  pe.busy = true;
  const int64_t id = pe.record.id;
  auto rp = self->make_response_promise<std::string>();
  // The primary leaves COLO (the secondary hears it and never runs), then
  // the secondary's copy goes.
  auto end = [self, guest, id, rp]() mutable {
    auto* p = find_pair(self, guest, id);
    if (p == nullptr)
      return;
    auto finish = [self, guest, id, rp]() mutable {
      auto* q = find_pair(self, guest, id);
      if (q == nullptr)
        return;
      q->record.secondary.clear();
      if (!move(self, *q, pair_state::ended, "unprotected by request")) {
        q->busy = false;
        q->unprotect_requested = false;
        rp.deliver(make_orchestrator_error(orchestrator_errc::journal, "the journal refused"));
        return;
      }
      auto body = json::serialize(pair_json(*q));
      self->state.pairs.erase(guest);
      rp.deliver(body);
    };
    if (p->record.secondary.empty())
      finish();
    else
      retire_copy(self, p->record.secondary, guest, finish);
  };
  if (pe.record.state == pair_state::unprotected)
    end();
  else
    host_qmp(self, pe.record.primary, guest,
             pe.record.state == pair_state::protected_ ? "x-colo-lost-heartbeat" : "migrate_cancel",
             {}, [end](caf::expected<json::value>) mutable { end(); });
  return rp;
}

bool pair_owns(const cluster_state& st, const std::string& guest, const std::string& host) {
  auto it = st.pairs.find(guest);
  return it != st.pairs.end() &&
         (it->second.record.primary == host || it->second.record.secondary == host);
}

bool in_pair(const cluster_state& st, const std::string& guest) {
  return st.pairs.count(guest) != 0;
}

json::array pairs_json(const cluster_state& st) {
  json::array out;
  for (const auto& [guest, pe] : st.pairs)
    out.push_back(pair_json(pe));
  return out;
}

} // namespace ferry::cluster_detail
