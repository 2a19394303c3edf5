#pragma once
// The cluster actor's state and the functions that work on it, carved by
// owner: host links and the orphan sweeper (cluster_hosts), the queue under
// the limits and single moves (cluster_queue), evacuations and their
// pre-flight (cluster_evacuation), JSON views for the API and metrics
// (cluster_views); cluster.cpp is the behaviour that calls them. Internal to
// orchestrator/.

#include "actors/host_interface.hpp"
#include "orchestrator/cluster.hpp"
#include "orchestrator/journal.hpp"
#include "orchestrator/migration_job.hpp"
#include "orchestrator/migration_progress.hpp"
#include "orchestrator/orchestrator_config.hpp"
#include "orchestrator/orchestrator_metrics.hpp"

#include <caf/all.hpp>

#include <boost/json.hpp>

#include <chrono>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace ferry::cluster_detail {

namespace json = boost::json;
using connect_host_atom = caf::atom_constant<caf::atom("connhost")>;
// The periodic refresh (it schedules the next); refresh_now_atom: one more
// refresh at once, which schedules nothing.
using refresh_atom = caf::atom_constant<caf::atom("refresh")>;
using refresh_now_atom = caf::atom_constant<caf::atom("refreshnow")>;
// (preflight_atom, evacuation id): read the dirty rates measured for it.
using preflight_atom = caf::atom_constant<caf::atom("preflight")>;
// (source_gone_atom, host): pending moves off a down host may have waited
// long enough for it.
using source_gone_atom = caf::atom_constant<caf::atom("srcgone")>;
// (snapshot_poll_atom, operation id): ask its agent how the job stands.
using snapshot_poll_atom = caf::atom_constant<caf::atom("snappoll")>;

inline constexpr auto refresh_interval = std::chrono::seconds(1);
inline constexpr auto request_timeout = std::chrono::seconds(10);
// An inventory answer later than this counts as a missed refresh.
inline constexpr auto inventory_timeout = std::chrono::seconds(2);
inline constexpr auto max_backoff = std::chrono::seconds(8);
// calc-dirty-rate's measuring time in the evacuation pre-flight, and how
// long moves wait for its answers at most.
inline constexpr int64_t preflight_calc_time_s = 1;
inline constexpr auto preflight_read_after = std::chrono::milliseconds(1300);
inline constexpr auto preflight_deadline = std::chrono::seconds(4);

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
  // Inventory refreshes in a row that got no answer in time: from
  // `degraded_after` on, the host is shown degraded and gets no new moves.
  uint32_t missed_refreshes = 0;
  // Why the peer last dialed was not accepted as this host ("" = it was).
  std::string refusal;
  std::chrono::steady_clock::time_point down_since; // when its link last went down
  bool degraded() const { return up && missed_refreshes >= degraded_after; }
  static constexpr uint32_t degraded_after = 2;
};

struct job_entry {
  job_record record;
  migration_job_actor actor;
  // A job readying both sides while the move waits for its slot (policy
  // prepare_ahead); it becomes `actor` when the slot is granted. Tried
  // once per move: one that could not get ready starts the plain way.
  migration_job_actor stager;
  bool stage_tried = false;
  migration_progress progress; // the job's last query-migrate, parsed once
  bool resume = false;         // found unfinished in the journal at start
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

// A COLO pair the cluster tends (cluster_pairs.cpp).
struct pair_entry {
  pair_record record;
  bool busy = false;              // a step's requests are in flight
  bool attempt = false;           // this orchestrator began its protecting
  bool secondary_created = false; // this attempt created the secondary's guest
  bool unprotect_requested = false;
  std::chrono::steady_clock::time_point since;             // entered its state
  std::chrono::steady_clock::time_point next_try;          // re-protection backoff
  std::chrono::steady_clock::time_point unprotected_since; // for the metrics
  std::chrono::seconds backoff{2};
  // The primary left COLO while the secondary still says colo: since when.
  std::optional<std::chrono::steady_clock::time_point> primary_left;
};

struct cluster_state {
  orchestrator_config cfg;
  orchestrator_metrics metrics;
  double measured_bandwidth = 0; // bytes/s, over finished migrations
  std::shared_ptr<journal> log;
  std::map<std::string, host_entry> hosts;
  std::map<int64_t, job_entry> jobs; // unfinished and recently finished
  std::map<int64_t, evacuation_entry> evacuations;
  std::map<std::string, pair_entry> pairs; // by guest; ended ones leave
  uint64_t colo_failovers = 0;
  // Snapshot operations waiting for their next poll (cluster_snapshots).
  std::map<int64_t, std::function<void()>> snapshot_polls;
  // Who dials agents: (connect_atom, host, port) -> (node, actor, ifs) —
  // the TLS middleman's actor, or a test's.
  caf::actor dialer;
  host_verifier verify; // judges each dialed host's identity proof
};

// The cluster's own handle: its API, its jobs' reports, and the messages
// it sends itself.
using cluster_impl = cluster_api::extend_with<job_parent_actor>::extend<
  caf::reacts_to<connect_host_atom, std::string>, caf::reacts_to<refresh_atom>,
  caf::reacts_to<refresh_now_atom>, caf::reacts_to<preflight_atom, int64_t>,
  caf::reacts_to<source_gone_atom, std::string>, caf::reacts_to<snapshot_poll_atom, int64_t>>;
using cluster_actor = cluster_impl::stateful_base<cluster_state>;

// Declared here, defined in the file that owns them.
json::object job_json(const job_entry& j);
void count_finished(cluster_state& st, const job_entry& j);
cluster_view view_of(const cluster_state& st);
std::string api_get(cluster_actor* self, const std::string& what);
uint64_t planned_inbound_memory(const cluster_state& st, const std::string& host);
std::optional<std::string> pick_target(const cluster_state& st, const std::string& source,
                                       uint64_t memory, const std::set<std::string>& exclude);
caf::expected<job_record> enqueue(cluster_actor* self, job_record job);
void start_job(cluster_actor* self, job_entry& j);
// A job actor for `j`'s move; `staged`: it readies both sides and waits for go.
migration_job_actor spawn_job(cluster_actor* self, const job_entry& j, bool staged);
void try_schedule(cluster_actor* self);
// A pending move that stops waiting (cancelled, re-planned): its staging,
// if any, is ended (the stager removes what it made).
void drop_stage(cluster_actor* self, job_entry& j);
void check_evacuation_done(cluster_actor* self, int64_t evac_id);
void retry_elsewhere(cluster_actor* self, const job_record& failed);
caf::expected<job_record> queue_move(cluster_actor* self, const std::string& guest,
                                     const std::string& source, const std::string& target,
                                     uint64_t memory, int32_t priority, int64_t evacuation);
caf::expected<job_record> plan_move(cluster_actor* self, const std::string& guest,
                                    const std::string& source, uint64_t memory, int32_t priority,
                                    int64_t evacuation);
caf::expected<std::string> api_migrate(cluster_actor* self, const std::string& guest,
                                       std::string target, int64_t evacuation,
                                       bool schedule = true);
void connect_host(cluster_actor* self, const std::string& name);
// A host's answer to an inventory request: its guests, it answers again,
// and what it holds that no one owns is swept.
void take_inventory(cluster_actor* self, const std::string& host, std::vector<guest_info> guests);
// Asks `host` for its capacity; the answer may let queued moves start.
void ask_capacity(cluster_actor* self, const std::string& host);
void sweep_orphans(cluster_actor* self, const std::string& host);
// Retires source copies a completed migration left paused on `host` (postmigrate) while the
// guest runs on another host.
void retire_stale_copies(cluster_actor* self, const std::string& host);
// Cancels the pending moves off `host` once it has been down for the
// policy's source_return_s; until then, checks again when that time is up.
void give_up_on_source(cluster_actor* self, const std::string& host);
void start_preflight(cluster_actor* self, int64_t evac_id);
void finish_preflight(cluster_actor* self, int64_t evac_id);
caf::expected<std::string> api_evacuate(cluster_actor* self, const std::string& host);
// COLO pairs (cluster_pairs.cpp): protect / unprotect requests, one round of
// tending every pair (each refresh and when a host goes down), and whether
// a guest's copy on a host belongs to a pair (the sweeper leaves it).
caf::result<std::string> api_protect(cluster_actor* self, const std::string& guest,
                                     const std::string& secondary);
caf::result<std::string> api_unprotect(cluster_actor* self, const std::string& guest);
void tend_pairs(cluster_actor* self);
bool pair_owns(const cluster_state& st, const std::string& guest, const std::string& host);
bool in_pair(const cluster_state& st, const std::string& guest);
json::array pairs_json(const cluster_state& st);
// Snapshots (cluster_snapshots.cpp): save, restore or delete on a guest's
// agent as a QMP job, journaled; the operations a restart finds running.
caf::result<std::string> api_snapshot(cluster_actor* self, const std::string& guest,
                                      const std::string& op, const std::string& tag);
void on_snapshot_poll(cluster_actor* self, int64_t id);
void resume_snapshots(cluster_actor* self);
json::array snapshots_json(const cluster_state& st);

} // namespace ferry::cluster_detail
