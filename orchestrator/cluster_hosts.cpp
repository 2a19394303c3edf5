// Links to the agents: connect with backoff, take each host's inventory
// and capacity, and the sweeper that removes targets no unfinished job owns.
#include "orchestrator/cluster_state.hpp"

#include "common/error.hpp"
#include "common/log.hpp"
#include "orchestrator/guest_spec_json.hpp"
#include "orchestrator/migration_job.hpp"
#include "orchestrator/move_estimate.hpp"
#include "orchestrator/orchestrator_error.hpp"

#include <algorithm>
#include <cstdio>

namespace ferry::cluster_detail {

namespace {

void retry_connect(cluster_actor* self, const std::string& name) {
  auto& h = self->state.hosts.at(name);
  h.connecting = false;
  self->delayed_send(self, h.backoff, connect_host_atom::value, name);
  h.backoff = std::min(std::chrono::milliseconds(max_backoff), h.backoff * 2);
}

// A peer at host `name`'s address not accepted as that host (it did not
// prove it is, or gave no inventory) gets no jobs; dialed again with
// backoff. Said once per change of reason.
void refuse_host(cluster_actor* self, const std::string& name, const std::string& why) {
  auto& h = self->state.hosts.at(name);
  if (h.refusal != why)
    log::error("refusing the peer at {}:{} as host {}: {}", h.address.control.host,
               h.address.control.port, name, why);
  h.refusal = why;
  retry_connect(self, name);
}

// The peer proved it is host `name`. It is up once its first inventory is
// in: until its guests are known, an evacuation, move or protect would be
// planned from an empty list (a restarted orchestrator, asked at once).
void host_is_up(cluster_actor* self, const std::string& name, const host_actor& handle) {
  self->request(handle, inventory_timeout, list_atom::value)
    .then(
      [self, name, handle](std::vector<guest_info>& gs) {
        auto& h = self->state.hosts.at(name);
        h.connecting = false;
        h.refusal.clear();
        h.handle = handle;
        self->monitor(h.handle);
        h.up = true;
        take_inventory(self, name, std::move(gs));
        log::info("host {} is up ({})", name, caf::to_string(h.handle.node()));
        h.backoff = std::chrono::milliseconds(250);
        // Jobs still settling with this host get the new link.
        for (auto& [id, j] : self->state.jobs)
          if (j.actor && (j.record.source == name || j.record.target == name))
            self->send(j.actor, host_up_atom::value, name, h.handle);
        // Only this host is new: the others' inventories are as fresh as
        // the last refresh (asking all of them here cost N² requests when
        // N hosts came up together).
        ask_capacity(self, name);
        tend_pairs(self);
      },
      [self, name](const caf::error& err) {
        refuse_host(self, name, "it gave no inventory: " + describe(err));
      });
}

// TLS only said the peer's certificate comes from the hosts' CA; it must
// also hold the key of the host we meant to reach.
void check_identity(cluster_actor* self, const std::string& name, const host_actor& handle) {
  const std::string challenge = identity::new_challenge();
  self->request(handle, request_timeout, identify_atom::value, challenge)
    .then(
      [self, name, handle, challenge](std::string& cert, std::string& signature) {
        auto who =
          self->state.verify(identity::proof{std::move(cert), std::move(signature)}, challenge);
        if (!who)
          return refuse_host(self, name, describe(who.error()));
        if (who->role != "host" || who->name != name)
          return refuse_host(self, name,
                             "its certificate names " + who->role + " '" + who->name +
                               "', not host '" + name + "'");
        host_is_up(self, name, handle);
      },
      [self, name](const caf::error& err) {
        refuse_host(self, name, "it gave no identity proof: " + describe(err));
      });
}

} // namespace

void connect_host(cluster_actor* self, const std::string& name) {
  auto& entry = self->state.hosts.at(name);
  if (entry.up || entry.connecting)
    return;
  entry.connecting = true;
  self
    ->request(self->state.dialer, request_timeout, caf::connect_atom_v, entry.address.control.host,
              entry.address.control.port)
    .then(
      [self, name](const caf::node_id&, caf::strong_actor_ptr& ptr, const std::set<std::string>&) {
        if (!ptr)
          return retry_connect(self, name);
        check_identity(self, name, caf::actor_cast<host_actor>(std::move(ptr)));
      },
      [self, name](const caf::error&) { retry_connect(self, name); });
}

void take_inventory(cluster_actor* self, const std::string& host, std::vector<guest_info> guests) {
  auto& h = self->state.hosts.at(host);
  if (h.degraded())
    log::info("host {} answers again", host);
  h.missed_refreshes = 0;
  h.guests = std::move(guests);
  sweep_orphans(self, host);
  retire_stale_copies(self, host);
}

void ask_capacity(cluster_actor* self, const std::string& host) {
  self->request(self->state.hosts.at(host).handle, request_timeout, capacity_atom::value)
    .then(
      [self, host](const host_capacity& c) {
        self->state.hosts.at(host).capacity = c;
        try_schedule(self);
      },
      [](const caf::error&) {});
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
    // A pending move owns a target only while it is being prepared ahead.
    const bool owned = std::any_of(st.jobs.begin(), st.jobs.end(), [&](const auto& kv) {
      const auto& j = kv.second;
      const auto& r = j.record;
      return r.guest == g.spec.name && r.target == host && !job_is_final(r.state) &&
             (r.state != job_state::pending || j.actor || j.stager);
    });
    if (owned || pair_owns(st, g.spec.name, host))
      continue;
    // Only a guest whose incoming migration has not completed is an orphan
    // (waiting, or failed and kept paused): one whose migration just
    // completed is the guest (its host may not have noticed yet). No
    // unfinished job owns it, so its job settled: the guest is elsewhere.
    h.sweeping.insert(g.spec.name);
    const std::string name = g.spec.name;
    self
      ->request(h.handle, request_timeout, qmp_atom::value, name, std::string{"query-migrate"},
                std::string{})
      .then(
        [self, host, name](const std::string& reply) {
          auto& hs = self->state.hosts.at(host);
          bool waiting = false;
          try {
            auto v = json::parse(reply);
            const auto* r = v.as_object().if_contains("return");
            const auto* s =
              r != nullptr && r->is_object() ? r->as_object().if_contains("status") : nullptr;
            waiting = s == nullptr || !s->is_string() || s->as_string() != "completed";
          } catch (const std::exception&) {
          }
          if (!waiting || !hs.up) {
            hs.sweeping.erase(name);
            return;
          }
          log::warn("removing orphaned target '{}' on {}", name, host);
          self->request(hs.handle, request_timeout, destroy_atom::value, name)
            .then([](bool) {}, [](const caf::error&) {});
        },
        [self, host, name](const caf::error&) { self->state.hosts.at(host).sweeping.erase(name); });
  }
  for (auto it = h.sweeping.begin(); it != h.sweeping.end();)
    it = present.count(*it) == 0 ? h.sweeping.erase(it) : std::next(it);
}

// A source copy left behind by a migration that completed while its host
// did not answer (its job succeeded without retiring it): paused in
// postmigrate, never to be resumed, while the guest runs on another host.
// Once the host answers again, the stale copy goes.
void retire_stale_copies(cluster_actor* self, const std::string& host) {
  auto& st = self->state;
  auto& h = st.hosts.at(host);
  for (const auto& g : h.guests) {
    if (g.spec.incoming || h.sweeping.count(g.spec.name) != 0 || in_pair(st, g.spec.name))
      continue;
    const bool busy = std::any_of(st.jobs.begin(), st.jobs.end(), [&](const auto& kv) {
      const auto& r = kv.second.record;
      return r.guest == g.spec.name && !job_is_final(r.state);
    });
    const bool elsewhere = std::any_of(st.hosts.begin(), st.hosts.end(), [&](const auto& kv) {
      return kv.first != host && kv.second.up &&
             std::any_of(kv.second.guests.begin(), kv.second.guests.end(), [&](const auto& o) {
               return o.spec.name == g.spec.name && !o.spec.incoming;
             });
    });
    if (busy || !elsewhere)
      continue;
    h.sweeping.insert(g.spec.name);
    const std::string name = g.spec.name;
    self
      ->request(h.handle, request_timeout, qmp_atom::value, name, std::string{"query-status"},
                std::string{})
      .then(
        [self, host, name](const std::string& reply) {
          auto& hs = self->state.hosts.at(host);
          bool stale = false;
          try {
            const auto v = json::parse(reply);
            const auto* r = v.as_object().if_contains("return");
            stale = r != nullptr && r->is_object() && r->as_object().contains("status") &&
                    r->as_object().at("status").as_string() == "postmigrate";
          } catch (const std::exception&) {
          }
          if (!stale || !hs.up) {
            hs.sweeping.erase(name);
            return;
          }
          log::warn("retiring the stale source copy of '{}' on {} (it runs elsewhere)", name, host);
          self->request(hs.handle, request_timeout, destroy_atom::value, name)
            .then([](bool) {}, [](const caf::error&) {});
        },
        [self, host, name](const caf::error&) { self->state.hosts.at(host).sweeping.erase(name); });
  }
}

} // namespace ferry::cluster_detail
