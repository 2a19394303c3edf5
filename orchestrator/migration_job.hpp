#pragma once
// One migration, as an actor walking the job state machine (job_state.hpp):
// create the target guest, migrate-incoming, set capabilities and parameters
// from the policy, migrate, follow query-migrate, then retire the source
// guest. Every transition is journaled before it is acted on. A job that
// does not succeed settles: it finds out from both hosts where the guest
// is, never runs two copies and never destroys one that may be the only one
// (docs/orchestrator.md, "The hand-over invariant"); when no host can say,
// it waits.
//
// The job reports to its parent:
//   (job_update_atom, job_record, migration_progress)   while it runs
//   (job_done_atom, job_record)                    once, in a final state
//   (job_step_atom, kind)                          per escalation step
//   (stage_dropped_atom, job id)                   a staged job gave up
// and takes (cancel_atom), (host_lost_atom, host) and (host_up_atom, host,
// handle) at any time. A job spawned `staged` readies both sides while its
// move waits for a slot and journals nothing until (go_atom) grants it one;
// a staged job that cannot get ready (or is cancelled) removes what it made
// and ends without a word: the move stays pending.

#include "actors/host_interface.hpp"
#include "orchestrator/journal.hpp"
#include "orchestrator/migration_progress.hpp"
#include "orchestrator/policy.hpp"

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>
#include <caf/allowed_unsafe_message_type.hpp>
#include <caf/typed_actor.hpp>

#include <memory>
#include <string>

namespace ferry {

using job_update_atom = caf::atom_constant<caf::atom("jobupdate")>;
using job_done_atom = caf::atom_constant<caf::atom("jobdone")>;
// (job_step_atom, kind): the job took an escalation step ("downtime-limit",
// "auto-converge", "dirty-limit", "cancel"; the journal has the details).
using job_step_atom = caf::atom_constant<caf::atom("jobstep")>;
using cancel_atom = caf::atom_constant<caf::atom("cancel")>;
// (host_lost_atom, host): the cluster lost its link to `host`.
using host_lost_atom = caf::atom_constant<caf::atom("hostlost")>;
// (host_up_atom, host, handle): the cluster reached `host` again; its new
// handle replaces the lost one.
using host_up_atom = caf::atom_constant<caf::atom("hostup")>;
// (go_atom): a staged job's move got its slot (journaled scheduling).
using go_atom = caf::atom_constant<caf::atom("go")>;
using stage_dropped_atom = caf::atom_constant<caf::atom("stagedrop")>;

// Where a job reports (the cluster; a test's recorder).
using job_parent_actor =
  caf::typed_actor<caf::reacts_to<job_update_atom, job_record, migration_progress>,
                   caf::reacts_to<job_done_atom, job_record>,
                   caf::reacts_to<job_step_atom, std::string>,
                   caf::reacts_to<stage_dropped_atom, int64_t>>;

// What a job takes from outside.
using migration_job_actor =
  caf::typed_actor<caf::reacts_to<cancel_atom>, caf::reacts_to<host_lost_atom, std::string>,
                   caf::reacts_to<host_up_atom, std::string, host_actor>, caf::reacts_to<go_atom>>;

struct job_context {
  job_record job; // in scheduling (fresh) or whatever the journal last said (resume)
  host_actor source;
  host_actor target;
  std::string target_address; // the target host's migration address
  migration_policy policy;
  std::shared_ptr<journal> log;
  job_parent_actor parent;
  // After an orchestrator restart: find out where the job really is first.
  bool resume = false;
  // Waiting for its slot (job still pending): get ready, then wait for go.
  bool staged = false;
};

migration_job_actor spawn_migration_job(caf::actor_system& sys, job_context ctx);

} // namespace ferry

// Job records and progress only travel between the orchestrator's own actors.
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(ferry::job_record)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(ferry::migration_progress)
