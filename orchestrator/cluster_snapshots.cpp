// Snapshots of a cluster's guests: the guest's agent runs snapshot-save,
// -load (restore) or -delete as a QMP job on the guest's disk (node
// "disk0", as the host agent starts its guests); the orchestrator journals
// the operation, polls the job until it concludes, dismisses it and says
// how it ended. A restarted orchestrator finds the operations left running
// in its journal and learns their end the same way; one whose job the agent
// never saw (the orchestrator died between journaling it and sending it) is
// started then.
#include "orchestrator/pair_steps.hpp"

#include "common/error.hpp"
#include "common/log.hpp"
#include "orchestrator/orchestrator_error.hpp"

#include <cstdlib>
#include <thread>

namespace ferry::cluster_detail {

using colo::host_qmp;

namespace {

constexpr auto poll_every = std::chrono::milliseconds(200);
// How long an operation may stay unanswered (its host down, its agent
// busy) before it is given up as failed.
constexpr int max_misses = 300; // 60 s of polls
const char* const disk_node = "disk0";

std::string job_id(int64_t id) {
  return "ferry-snapshot-" + std::to_string(id);
}

json::object snapshot_json(const snapshot_record& r) {
  return json::object{{"id", r.id},   {"guest", r.guest}, {"host", r.host},  {"op", r.op},
                      {"tag", r.tag}, {"state", r.state}, {"error", r.error}};
}

using done_fn = std::function<void(const snapshot_record&)>;

// Records the end in the journal and the metrics, then tells `done`.
void conclude(cluster_actor* self, snapshot_record r, bool ok, const std::string& error,
              const done_fn& done) {
  r.state = ok ? "done" : "failed";
  r.error = error;
  if (auto j = self->state.log->finish_snapshot(r.id, ok, error); !j)
    log::error("snapshot {}: the journal refused its end: {}", r.id, describe(j.error()));
  self->state.metrics.snapshot_finished(r.op, ok);
  if (ok)
    log::info("snapshot {} of '{}' ({} '{}') done", r.id, r.guest, r.op, r.tag);
  else
    log::warn("snapshot {} of '{}' ({} '{}') failed: {}", r.id, r.guest, r.op, r.tag, error);
  done(r);
}

void start_job(cluster_actor* self, const snapshot_record& r, const done_fn& done);

// Asks the agent how the job stands until it has concluded; then journals
// the end and dismisses the job (in that order: a job dismissed but not
// journaled could not be told from one never started). `may_start`: the
// journal says the operation runs but this orchestrator did not send it —
// an agent that does not know the job never received it.
void poll_job(cluster_actor* self, const snapshot_record& r, int misses, const done_fn& done,
              bool may_start = false) {
  host_qmp(
    self, r.host, r.guest, "query-jobs", {},
    [self, r, misses, done, may_start](const caf::expected<json::value>& v) {
      const json::object* job = nullptr;
      if (v && v->is_array())
        for (const auto& j : v->as_array())
          if (const auto* id = j.is_object() ? j.as_object().if_contains("id") : nullptr;
              id != nullptr && id->is_string() && id->as_string() == job_id(r.id))
            job = &j.as_object();
      if (v && job == nullptr && may_start) {
        log::info("snapshot {} of '{}' never reached its agent: starting it now", r.id, r.guest);
        return start_job(self, r, done);
      }
      if (v && job == nullptr)
        return conclude(
          self, r, false,
          "the agent no longer knows the job (query-jobs: " + json::serialize(*v) + ")", done);
      if (!v || job->at("status") != "concluded") {
        if (!v && misses + 1 >= max_misses)
          return conclude(self, r, false, describe(v.error()), done);
        self->state.snapshot_polls[r.id] = [self, r, m = v ? 0 : misses + 1, done,
                                            start = may_start && !v] {
          poll_job(self, r, m, done, start);
        };
        self->delayed_send(self, poll_every, snapshot_poll_atom::value, r.id);
        return;
      }
      const auto* err = job->if_contains("error");
      const std::string error =
        err != nullptr && err->is_string() ? std::string{err->as_string()} : "";
      conclude(self, r, error.empty(), error, done);
      host_qmp(self, r.host, r.guest, "job-dismiss", {{"id", job_id(r.id)}},
               [](const caf::expected<json::value>&) {});
    });
}

// Tests only: FERRY_FAULT_SNAPSHOT_UNSENT_MS=N holds the orchestrator N ms
// between journaling an operation and sending it to the agent, saying so on
// stderr, so that a test can kill it exactly there.
void unsent_fault_point(const snapshot_record& r) {
  const char* ms = std::getenv("FERRY_FAULT_SNAPSHOT_UNSENT_MS");
  if (ms == nullptr)
    return;
  log::warn("fault point: snapshot {} journaled, not sent; holding {} ms", r.id, ms);
  // Blocking on purpose (test-only): nothing may reach the agent meanwhile.
  std::this_thread::sleep_for(std::chrono::milliseconds(std::strtoul(ms, nullptr, 10)));
}

void start_job(cluster_actor* self, const snapshot_record& r, const done_fn& done) {
  json::object args{{"job-id", job_id(r.id)}, {"tag", r.tag}, {"devices", json::array{disk_node}}};
  if (r.op != "delete")
    args["vmstate"] = disk_node;
  const char* command = r.op == "save"      ? "snapshot-save"
                        : r.op == "restore" ? "snapshot-load"
                                            : "snapshot-delete";
  host_qmp(self, r.host, r.guest, command, args,
           [self, r, done](const caf::expected<json::value>& v) {
             if (!v)
               return conclude(self, r, false, describe(v.error()), done);
             poll_job(self, r, 0, done);
           });
}

} // namespace

void on_snapshot_poll(cluster_actor* self, int64_t id) {
  auto it = self->state.snapshot_polls.find(id);
  if (it == self->state.snapshot_polls.end())
    return;
  auto next = std::move(it->second);
  self->state.snapshot_polls.erase(it);
  next();
}

caf::result<std::string> api_snapshot(cluster_actor* self, const std::string& guest,
                                      const std::string& op, const std::string& tag) {
  auto& st = self->state;
  if (op != "save" && op != "restore" && op != "delete")
    return make_orchestrator_error(orchestrator_errc::invalid_request,
                                   "op must be save, restore or delete, not '" + op + "'");
  if (tag.empty() || tag.size() > 255)
    return make_orchestrator_error(orchestrator_errc::invalid_request,
                                   "a snapshot tag of 1 to 255 bytes is needed");
  std::string host;
  for (const auto& [name, h] : st.hosts)
    for (const auto& g : h.guests)
      if (g.spec.name == guest && !g.spec.incoming)
        host = name;
  if (host.empty())
    return make_orchestrator_error(orchestrator_errc::invalid_request,
                                   "no host runs a guest named '" + guest + "'");
  for (const auto& [id, j] : st.jobs)
    if (j.record.guest == guest && !job_is_final(j.record.state))
      return make_orchestrator_error(orchestrator_errc::conflict, "guest '" + guest +
                                                                    "' is being migrated (job " +
                                                                    std::to_string(id) + ")");
  if (in_pair(st, guest))
    return make_orchestrator_error(orchestrator_errc::conflict,
                                   "guest '" + guest + "' is in a COLO pair");
  for (const auto& s : st.log->snapshots(true))
    if (s.guest == guest)
      return make_orchestrator_error(orchestrator_errc::conflict,
                                     "guest '" + guest + "' has a snapshot operation under way (" +
                                       std::to_string(s.id) + ")");
  auto rec = st.log->add_snapshot(snapshot_record{0, guest, host, op, tag, "running", ""});
  if (!rec)
    return rec.error();
  auto rp = self->make_response_promise<std::string>();
  const done_fn done = [rp](const snapshot_record& r) mutable {
    if (r.state == "done")
      rp.deliver(json::serialize(snapshot_json(r)));
    else
      rp.deliver(
        make_orchestrator_error(orchestrator_errc::invalid_request,
                                "snapshot " + r.op + " of '" + r.guest + "' failed: " + r.error));
  };
  unsent_fault_point(*rec);
  start_job(self, *rec, done);
  return rp;
}

// Operations the last orchestrator left running: their end is learnt from
// the agents once they answer.
void resume_snapshots(cluster_actor* self) {
  for (const auto& r : self->state.log->snapshots(true)) {
    log::info("snapshot {} of '{}' ({} '{}') was under way: asking its agent", r.id, r.guest, r.op,
              r.tag);
    self->state.snapshot_polls[r.id] = [self, r] {
      poll_job(
        self, r, 0, [](const snapshot_record&) {}, true);
    };
    self->delayed_send(self, std::chrono::seconds(1), snapshot_poll_atom::value, r.id);
  }
}

json::array snapshots_json(const cluster_state& st) {
  json::array out;
  for (const auto& r : st.log->snapshots(false))
    out.push_back(snapshot_json(r));
  return out;
}

} // namespace ferry::cluster_detail
