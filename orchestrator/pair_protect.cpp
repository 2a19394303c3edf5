// Making and ending COLO pairs: protect (the secondary created on another
// host, x-colo on both sides, the primary's migrate — its first whole copy,
// then checkpoints), an attempt that fails undone, and unprotect (the
// primary runs on, the secondary's copy goes).
#include "orchestrator/pair_steps.hpp"

#include "common/error.hpp"
#include "common/log.hpp"
#include "orchestrator/orchestrator_error.hpp"

#include <algorithm>
#include <utility>

namespace ferry::cluster_detail {

namespace colo {

namespace {

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
  auto in = std::make_shared<std::vector<qmp_step>>(
    std::vector<qmp_step>{{"migrate-set-capabilities", {{"capabilities", caps}}},
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

} // namespace

// A protection attempt that did not get the pair into COLO: the primary's
// first copy stopped, the secondary's guest removed (it never ran), the
// pair unprotected until the next try.
void protect_failed(cluster_actor* self, const std::string& guest, int64_t id,
                    const std::string& why) {
  auto* pe = find_pair(self, guest, id);
  if (pe == nullptr)
    return;
  pe->busy = true;
  host_qmp(self, pe->record.primary, guest, "migrate_cancel", {},
           [self, guest, id, why](const caf::expected<json::value>&) {
             leave_unprotected(self, guest, id, why, true);
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

} // namespace colo

using namespace colo;

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
      where.empty()
        ? "no guest '" + guest + "' on a host that is up"
        : "guest '" + guest + "' is on more than one host: protect it once it is on one");
  std::string to = secondary;
  if (to.empty()) {
    auto pick = pick_target(st, where[0], memory, {});
    if (!pick)
      return make_orchestrator_error(orchestrator_errc::conflict, "no host can take a secondary");
    to = *pick;
  } else if (st.hosts.count(to) == 0) {
    return make_orchestrator_error(orchestrator_errc::invalid_request, "unknown host '" + to + "'");
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
      if (!move_pair(self, *q, pair_state::ended, "unprotected by request")) {
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
             {}, [end](const caf::expected<json::value>&) mutable { end(); });
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
