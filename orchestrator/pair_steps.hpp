#pragma once
// The plumbing the COLO pair files share (cluster_pairs.cpp tends pairs,
// pair_protect.cpp makes and ends them): QMP through a host, journaled
// moves, retiring a copy that does not run. Internal to orchestrator/.

#include "orchestrator/cluster_state.hpp"

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace ferry::cluster_detail::colo {

using clock_type = std::chrono::steady_clock;
// A pair not in COLO on both sides this long after protecting began fails
// the attempt (it is tried again, backing off).
inline constexpr auto protect_deadline = std::chrono::seconds(120);
// The primary's host out of reach this much longer than the fence timeout:
// its guest has paused itself, so the secondary may run.
inline constexpr auto fence_margin = std::chrono::seconds(1);
inline constexpr auto max_pair_backoff = std::chrono::seconds(30);
// A primary that left COLO while its secondary still says colo: the
// secondary gets this long to hear it before it is removed anyway.
inline constexpr auto secondary_grace = std::chrono::seconds(5);
inline constexpr auto status_timeout = std::chrono::seconds(2);
// Checkpoints every 200 ms: output held at most that long (plus a
// checkpoint), at a few pages' copy per checkpoint for an idle guest.
inline constexpr uint64_t checkpoint_delay_ms = 200;

using answer = std::function<void(const caf::expected<json::value>&)>;

// One QMP command on `guest` through `host`'s actor: its "return", or why not.
void host_qmp(cluster_actor* self, const std::string& host, const std::string& guest,
              const std::string& command, const json::object& args, const answer& done,
              std::chrono::seconds timeout = request_timeout);

struct qmp_step {
  std::string command;
  json::object args;
};

// `steps` on `guest` one after the other; `done` gets the first error, or "".
void host_steps(cluster_actor* self, const std::string& host, const std::string& guest,
                const std::shared_ptr<std::vector<qmp_step>>& steps, size_t i,
                const std::function<void(const std::string&)>& done);

// The "status" of a QMP return ("none" without one, "" for no answer).
std::string status_of(const caf::expected<json::value>& r);
bool host_up(const cluster_state& st, const std::string& host);
bool draining(const cluster_state& st, const std::string& host);
// The pair of `guest` still the one a callback was started for.
pair_entry* find_pair(cluster_actor* self, const std::string& guest, int64_t id);
// Journals the transition, then lets the caller act (false: refused; the
// pair stays where it was, said in the log).
bool move_pair(cluster_actor* self, pair_entry& pe, pair_state to, const std::string& note);
// A copy of `guest` on `host` that does not run (a secondary, a fenced or
// superseded primary) goes; one that runs is never touched.
void retire_copy(
  cluster_actor* self, const std::string& host, const std::string& guest,
  const std::function<void()>& then = [] {});
// x-colo-lost-heartbeat on `host`'s copy: COLO ends there, that copy runs.
void lost_heartbeat(cluster_actor* self, pair_entry& pe, const std::string& host,
                    const std::string& why);
json::object pair_json(const pair_entry& pe);
// The pair's secondary copy retired, then the pair unprotected with `why`;
// protection is tried again in a second, or — `back_off`, an attempt that
// failed — after the pair's backoff, which doubles.
void leave_unprotected(cluster_actor* self, const std::string& guest, int64_t id,
                       const std::string& why, bool back_off);

// Protecting (pair_protect.cpp): the secondary created and both sides set
// to x-colo; an attempt that fails is undone and the pair unprotected.
void start_protect(cluster_actor* self, pair_entry& pe);
void protect_failed(cluster_actor* self, const std::string& guest, int64_t id,
                    const std::string& why);

} // namespace ferry::cluster_detail::colo
