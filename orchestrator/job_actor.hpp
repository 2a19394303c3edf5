#pragma once
// Inside a migration job (migration_job.cpp): its state, its handle with
// the internal timers, and the steps the job's files share — journaled
// transitions, QMP through a host, the end of a job. Not for other
// modules.

#include "orchestrator/escalation_ladder.hpp"
#include "orchestrator/migration_job.hpp"

#include <caf/all.hpp>

#include <boost/json.hpp>

#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace ferry::job_detail {

namespace json = boost::json;
using clock_type = std::chrono::steady_clock;
using poll_atom = caf::atom_constant<caf::atom("poll")>;
using settle_atom = caf::atom_constant<caf::atom("settle")>;

constexpr auto qmp_timeout = std::chrono::seconds(30);
// destroy and list: the host answers these without waiting on a guest start.
constexpr auto host_request_timeout = std::chrono::seconds(30);
constexpr auto poll_interval = std::chrono::milliseconds(250);
// How often a job that cannot know where its guest is asks both hosts again.
constexpr auto hold_retry = std::chrono::seconds(2);
// Rounds of poll_interval a source gets to end its migration after
// migrate_cancel before the job says it waits.
constexpr int cancel_rounds = 40;

struct job_state_data {
  job_context ctx;
  bool target_created = false;
  bool migrate_issued = false;
  bool cancel_requested = false;
  bool finishing = false;
  std::string uri;
  clock_type::time_point started;
  clock_type::time_point last_progress;
  clock_type::time_point completing_since;
  uint64_t best_remaining = UINT64_MAX;
  json::object progress;
  std::optional<escalation_ladder> ladder; // set once the policy is known
  // Ending a job that did not succeed (settle): where it ends, why, and
  // what has been done towards it.
  job_state settle_to = job_state::failed;
  std::string settle_why;
  std::string settle_extra; // what settling did on the way
  bool source_cancel_sent = false;
  int settle_rounds = 0;
  std::string holding;    // why the job waits, while it does
  bool source_ran = true; // the guest ran on the source when the job began
  // Each poll round carries the token it was started with; an event that
  // asks for a round now takes a new token, so an older round (its timer or
  // its answer in flight) ends quietly instead of polling in parallel.
  uint64_t poll_token = 0;
  // Getting both sides ready (side_ready): how many are, the first error.
  int sides_ready = 0;
  std::string prepare_error;
  bool target_completed = false; // the target's MIGRATION event said so
  // The source's completion came as an event: its final figures are asked
  // for alongside the target's confirmation, and the job ends once both are
  // in (`arrival` holds the ending's note meanwhile).
  bool figures_pending = false;
  std::optional<std::string> arrival;
  bool granted = false;   // a staged job got its slot (go)
  bool preparing = false; // prepare_target ran: the sides are on their way
  // Postcopy (job_postcopy.cpp): from the rung on, the job follows the
  // migration to its end and never cancels or takes the guest back.
  bool in_postcopy = false;
  bool recovering = false; // a recovery's commands are on their way
  uint32_t recover_attempts = 0;
  std::chrono::seconds recover_backoff{0};
  clock_type::time_point next_recover;
  std::optional<clock_type::time_point> paused_since;
  clock_type::duration paused_before{}; // earlier pauses, summed
  std::optional<uint64_t> target_blocktime_ms;
};

// A staged job still waiting for its slot: it journals nothing, and what
// would fail a job only ends the staging (drop_stage).
inline bool staging(const job_state_data& st) {
  return st.ctx.staged && !st.granted;
}

// The job's own handle adds its poll timer to what others may send it.
using job_impl = migration_job_actor::extend<
  caf::reacts_to<poll_atom, uint64_t>, caf::reacts_to<settle_atom>,
  caf::reacts_to<qmp_event_atom, std::string, std::string, std::string>>;
using job_actor = job_impl::stateful_base<job_state_data>;
using on_return = std::function<void(const json::value&)>;

// Whether a host's guest list holds the job's guest.
bool lists_guest(const std::vector<guest_info>& guests, const std::string& name);
// The parent hears the job's state and figures.
void report(job_actor* self);
// Journals the transition, then lets the caller act (false: the journal
// refused it, and the job has ended).
bool move(job_actor* self, job_state to, const std::string& note);
// One QMP command on a guest through its host actor; a QMP error or a lost
// host goes to `on_error`, or fails the job without one.
void qmp(job_actor* self, const host_actor& host, const std::string& guest,
         const std::string& command, const boost::json::object& args, on_return then,
         const std::function<void(const std::string&)>& on_error = {});
// The "status" member of a QMP return (query-migrate, query-status), or
// `absent` when the reply has none.
std::string status_of(const boost::json::value& r, const std::string& absent = {});
// Ends the job in `to` with `note` (journaled), once.
void finish(job_actor* self, job_state to, const std::string& note);

// Tests only (FERRY_FAULT_HOLD=STATE:MS): parks the job at `to`.
void fault_point(const job_record& job, job_state to);

// Settling (job_settle.cpp): how a job that does not simply succeed ends.
void settle(job_actor* self);
void end_unsucceeded(job_actor* self, job_state to, const std::string& why);
void fail(job_actor* self, const std::string& why);
// The source's final figures arrived (or cannot): a hand-over confirmed
// meanwhile ends the job now.
void figures_in(job_actor* self);
// Ends a staging: the target it created (if any) is removed — no migrate
// was ever sent, so it holds nothing — and the job ends; its move stays
// pending for the cluster to start the plain way.
void drop_stage(job_actor* self, const std::string& why);
// Preparing (job_prepare.cpp): the target created from the source's spec
// and both sides configured at once; judge_sides starts the migration once
// both are ready, or ends the job on the first error.
void prepare_target(job_actor* self, guest_spec spec);
void judge_sides(job_actor* self);
// `migrate` on the source (migration_job.cpp).
void start_migration(job_actor* self);
// Postcopy (job_postcopy.cpp). The rung: migrate-start-postcopy.
void start_postcopy(job_actor* self);
// A poll round's answer once postcopy was asked for (or the source is in
// it): follows it, recovers a paused one, ends a lost one.
void follow_postcopy(job_actor* self, const std::string& status, uint64_t token);
// The pages flow again after a pause (postcopy-active, or a recovery so quick
// the source was next seen completed): the recovery is noted and counted.
void postcopy_flowing(job_actor* self);
// What would fail a job in postcopy only delays it (true then): the guest
// runs on the target, and nothing may be cancelled or taken back.
bool postcopy_trouble(job_actor* self, const std::string& why);
// The target holds the guest: the source copy is retired and the job ends
// succeeded (through completing if it was still running).
void target_won(job_actor* self, const std::string& note);

} // namespace ferry::job_detail
