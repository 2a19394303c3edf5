#pragma once
// The orchestrator's cluster actor: keeps a TLS link to every configured
// agent (reconnecting with backoff, accepting a host only once it proved it
// holds that host's key, marking hosts up and down), the inventory
// of hosts and guests, and the migration queue under the policy's limits;
// plans evacuations; spawns one migration_job per migration; resumes the
// journal's unfinished jobs after a restart.
//
// API (replies are JSON text, for the HTTP layer):
//   (api_get_atom, "hosts" | "guests" | "migrations" | "evacuations")
//   (api_migrate_atom, guest, target host or "")
//   (cancel_atom, job id)
//   (api_evacuate_atom, host)
//   (api_create_atom, host, guest spec JSON)     starts a guest on a host
//   (api_protect_atom, guest, secondary or "")   makes a COLO pair
//   (api_unprotect_atom, guest)                  ends it (the primary runs on)
//   (api_snapshot_atom, guest, op, tag)          save / restore / delete a snapshot

#include "actors/identity_proof.hpp"
#include "orchestrator/journal.hpp"
#include "orchestrator/migration_job.hpp"
#include "orchestrator/orchestrator_config.hpp"

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>
#include <caf/atom.hpp>
#include <caf/typed_actor.hpp>

#include <functional>
#include <memory>

namespace ferry {

using api_get_atom = caf::atom_constant<caf::atom("apiget")>;
using api_migrate_atom = caf::atom_constant<caf::atom("apimigrate")>;
using api_evacuate_atom = caf::atom_constant<caf::atom("apievac")>;
using api_create_atom = caf::atom_constant<caf::atom("apicreate")>;
using api_protect_atom = caf::atom_constant<caf::atom("apiprotect")>;
using api_unprotect_atom = caf::atom_constant<caf::atom("apiunprot")>;
using api_snapshot_atom = caf::atom_constant<caf::atom("apisnap")>;

// What the HTTP API, the metrics endpoint and tests may ask the cluster.
using cluster_api = caf::typed_actor<
  caf::replies_to<api_get_atom, std::string>::with<std::string>,
  caf::replies_to<api_migrate_atom, std::string, std::string>::with<std::string>,
  caf::replies_to<api_evacuate_atom, std::string>::with<std::string>,
  caf::replies_to<api_create_atom, std::string, std::string>::with<std::string>,
  caf::replies_to<cancel_atom, int64_t>::with<std::string>,
  caf::replies_to<api_protect_atom, std::string, std::string>::with<std::string>,
  caf::replies_to<api_unprotect_atom, std::string>::with<std::string>,
  caf::replies_to<api_snapshot_atom, std::string, std::string, std::string>::with<std::string>,
  caf::replies_to<metrics_atom>::with<std::string>>;

// Judges the proof a dialed host gives for a challenge: who it proves to be.
using host_verifier = std::function<caf::expected<identity::peer>(const identity::proof&,
                                                                  const std::string& challenge)>;

// `dialer` reaches the agents: (connect_atom, host, port) -> (node_id,
// strong_actor_ptr, interface set), as CAF's middleman answers; none = the
// TLS middleman of `sys`. `verify` checks each host's identity proof; none =
// identity::check against the configured CA file. Tests pass their own.
cluster_api spawn_cluster(caf::actor_system& sys, orchestrator_config cfg,
                          std::shared_ptr<journal> log, caf::actor dialer = {},
                          host_verifier verify = {});

} // namespace ferry
