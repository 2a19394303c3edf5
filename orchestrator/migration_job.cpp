#include "orchestrator/migration_job.hpp"

#include "common/error.hpp"
#include "common/log.hpp"
#include "orchestrator/escalation_ladder.hpp"
#include "orchestrator/orchestrator_error.hpp"

#include <caf/all.hpp>

#include <boost/json.hpp>

#include <chrono>
#include <cstdio>
#include <functional>
#include <optional>

namespace ferry {

namespace {

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
};

// The job's own handle adds its poll timer to what others may send it.
using job_impl =
  migration_job_actor::extend<caf::reacts_to<poll_atom>, caf::reacts_to<settle_atom>>;
using job_actor = job_impl::stateful_base<job_state_data>;
using on_return = std::function<void(const json::value&)>;

std::string describe_reply_error(const json::object& err) {
  const auto* cls = err.if_contains("class");
  const auto* desc = err.if_contains("desc");
  std::string out = desc != nullptr && desc->is_string() ? std::string{desc->as_string()} : "?";
  if (cls != nullptr && cls->is_string())
    out += " (" + std::string{cls->as_string()} + ")";
  return out;
}

void finish(job_actor* self, job_state to, const std::string& note);
void fail(job_actor* self, const std::string& why);

void report(job_actor* self) {
  self->send(self->state.ctx.parent, job_update_atom::value, self->state.ctx.job,
             migration_progress::from(self->state.progress));
}

// Journals the transition, then lets the caller act. A journal that cannot
// be written stops the job where it is: acting unrecorded is what the
// journal exists to prevent. A migration still running is cancelled first
// (the source runs on; the waiting target is the orphan sweeper's): left
// alone it could complete with no record of where the guest went. Once
// completing, the hand-over may be done and nothing is undone.
bool move(job_actor* self, job_state to, const std::string& note) {
  auto& job = self->state.ctx.job;
  if (auto ok = self->state.ctx.log->move(job, to, note); !ok) {
    job.error = describe(ok.error());
    if (self->state.migrate_issued && job.state == job_state::running) {
      // Nobody waits for the answer: the job ends now.
      caf::anon_send(self->state.ctx.source, qmp_atom::value, job.guest,
                     std::string{"migrate_cancel"}, std::string{"{}"});
      job.error += "; the migration was cancelled (the source keeps running)";
    }
    self->send(self->state.ctx.parent, job_done_atom::value, job);
    self->quit();
    return false;
  }
  job.state = to;
  report(self);
  return true;
}

// Runs one QMP command on a guest through its host actor; a QMP error or a
// lost host fails the job with the reason.
void qmp(job_actor* self, const host_actor& host, const std::string& guest,
         const std::string& command, const json::object& args, on_return then,
         const std::function<void(const std::string&)>& on_error = {}) {
  self->request(host, qmp_timeout, qmp_atom::value, guest, command, json::serialize(args))
    .then(
      [self, command, then = std::move(then), on_error](const std::string& text) {
        json::value reply;
        try {
          reply = json::parse(text);
        } catch (const std::exception&) {
          fail(self, command + ": malformed reply");
          return;
        }
        const auto& o = reply.as_object();
        if (const auto* err = o.if_contains("error"); err != nullptr && err->is_object()) {
          const std::string why = command + ": " + describe_reply_error(err->as_object());
          if (on_error)
            on_error(why);
          else
            fail(self, why);
          return;
        }
        const auto* ret = o.if_contains("return");
        then(ret != nullptr ? *ret : json::value{});
      },
      [self, command, on_error](const caf::error& err) {
        const std::string why = command + ": " + describe(err);
        if (on_error)
          on_error(why);
        else
          fail(self, why);
      });
}

void finish(job_actor* self, job_state to, const std::string& note) {
  auto& job = self->state.ctx.job;
  if (job_is_final(job.state))
    return;
  if (!move(self, to, note))
    return;
  self->send(self->state.ctx.parent, job_done_atom::value, job);
  self->quit();
}

// ---------------------------------------------------------------------------
// Settling: how a job that does not simply succeed ends without ever
// running two copies of its guest or destroying one that may be the only
// one (docs/orchestrator.md, "The hand-over invariant"; the model in
// tools/model/handover.pml checks these steps). What the job relies on:
// a source whose migration is not `completed` never sent go, so the target
// cannot run; migrate_cancel on a target fences it (afterwards it either
// completed — it is the guest — or never will); a fenced target goes only
// after the source took the guest back; nothing is destroyed or resumed
// without an answer from the host that holds it.

void settle(job_actor* self);

// The job cannot know where its guest is (a host does not answer): it
// waits, keeping every copy as it is, says why once, and asks again.
void hold(job_actor* self, const std::string& why) {
  auto& st = self->state;
  if (st.holding != why) {
    st.holding = why;
    st.ctx.job.error = why;
    log::warn("job {} ({}): {}", st.ctx.job.id, st.ctx.job.guest, why);
    (void) st.ctx.log->add_step(st.ctx.job.id, "hold: " + why);
    report(self);
  }
  self->delayed_send(self, hold_retry, settle_atom::value);
}

// The source holds the guest and runs it (its migration never completed, or
// it was resumed): its vCPUs get full speed back, and the job ends.
void source_keeps_guest(job_actor* self, const std::string& note) {
  auto& st = self->state;
  if (st.ladder->dirty_limited()) {
    st.ladder->dirty_limit_lifted();
    auto next = [self, note](auto&&...) { source_keeps_guest(self, note); };
    qmp(self, st.ctx.source, st.ctx.job.guest, "cancel-vcpu-dirty-limit", {}, next, next);
    return;
  }
  finish(self, st.settle_to, note);
}

// The target never got go (its source did not complete): it cannot be the
// guest, so it goes. One that cannot be reached now is left to the orphan
// sweeper; it never starts on its own.
void remove_target(job_actor* self) {
  auto& st = self->state;
  const std::string note = st.settle_why + st.settle_extra;
  if (!st.target_created) {
    source_keeps_guest(self, note);
    return;
  }
  self->request(st.ctx.target, host_request_timeout, destroy_atom::value, st.ctx.job.guest)
    .then(
      [self, note](bool) {
        self->state.target_created = false;
        source_keeps_guest(self, note);
      },
      [self, note](const caf::error& err) {
        source_keeps_guest(self, note + "; the target's copy (it can never run) could not be " +
                                   "removed now: " + describe(err));
      });
}

// The source handed over and the fenced target can never run: the source
// takes the guest back first, and only then does the target's copy go. (The
// other order loses the guest if the source dies in between — the model
// checker's counterexample.) A guest that was paused stays paused: the
// source need only still hold it.
void take_back(job_actor* self) {
  auto& st = self->state;
  const bool ran = st.source_ran;
  qmp(
    self, st.ctx.source, st.ctx.job.guest, ran ? "cont" : "query-status", {},
    [self, ran](const json::value&) {
      self->state.settle_extra =
        ran ? "; source guest resumed" : "; the source guest stays paused, as it was";
      remove_target(self);
    },
    [self](const std::string& why) {
      hold(self, "the fenced target can never run, but the source does not take the guest back (" +
                   why + "): the target's copy is kept until it does");
    });
}

// The guest arrived on the target after all: it is the guest.
void target_won(job_actor* self, const std::string& note) {
  auto& st = self->state;
  st.target_created = false;
  st.ctx.job.error.clear();
  self->request(st.ctx.source, host_request_timeout, destroy_atom::value, st.ctx.job.guest)
    .then(
      [self, note](bool) { finish(self, job_state::succeeded, note + "; source copy retired"); },
      [self, note](const caf::error& err) {
        finish(self, job_state::succeeded,
               note + "; the source's stale copy (paused, never to be resumed) could not be " +
                 "retired now: " + describe(err));
      });
}

// The target after a fence: completed = it is the guest; anything else =
// it will never run, and the source takes the guest back.
void judge_fenced_target(job_actor* self) {
  auto& st = self->state;
  qmp(
    self, st.ctx.target, st.ctx.job.guest, "query-migrate", {},
    [self](const json::value& r) {
      const auto* s = r.is_object() ? r.as_object().if_contains("status") : nullptr;
      if (s != nullptr && s->is_string() && s->as_string() == "completed") {
        target_won(self, "the guest arrived on the target before it was fenced");
        return;
      }
      take_back(self);
    },
    [self](const std::string& why) {
      hold(self,
           "the target does not say where the guest is (" + why + "): both copies stay paused");
    });
}

// The fence was not answered. A whole copy never leaves on its own, so a
// target host that answers without the guest lost it some other way, maybe
// after it ran: nobody can say whether the source's copy is stale.
void fence_unanswered(job_actor* self, const std::string& qmp_error) {
  auto& st = self->state;
  self->request(st.ctx.target, host_request_timeout, list_atom::value)
    .then(
      [self, qmp_error](const std::vector<guest_info>& guests) {
        auto& st1 = self->state;
        const bool there = std::any_of(guests.begin(), guests.end(), [&](const auto& g) {
          return g.spec.name == st1.ctx.job.guest;
        });
        hold(self, there ? "the target holds the guest but does not answer for it (" + qmp_error +
                             "): both copies stay paused"
                         : "the target's copy is gone and may have run before it went: the "
                           "source's copy stays paused (resume it by hand only if the target "
                           "never ran)");
      },
      [self](const caf::error& err) {
        hold(self, "the source handed over and the target host does not answer (" + describe(err) +
                     "): both copies stay paused until it does");
      });
}

// The source completed: the target may hold (or run) the guest. Fence it,
// then judge.
void fence_target(job_actor* self) {
  auto& st = self->state;
  qmp(
    self, st.ctx.target, st.ctx.job.guest, "migrate_cancel", {},
    [self](const json::value&) { judge_fenced_target(self); },
    [self](const std::string& why) { fence_unanswered(self, why); });
}

// The source does not answer: only the target can say. A target that
// completed runs the guest (its source necessarily handed over); anything
// else may be the only copy, or the source may run on: wait.
void source_unknown(job_actor* self, const std::string& why) {
  auto& st = self->state;
  qmp(
    self, st.ctx.target, st.ctx.job.guest, "query-migrate", {},
    [self, why](const json::value& r) {
      const auto* s = r.is_object() ? r.as_object().if_contains("status") : nullptr;
      if (s != nullptr && s->is_string() && s->as_string() == "completed") {
        auto& st1 = self->state;
        st1.target_created = false;
        st1.ctx.job.error.clear();
        finish(self, job_state::succeeded,
               "the guest is on the target; the source does not answer (" + why +
                 "): its stale paused copy must never be resumed");
        return;
      }
      hold(self, "the source does not answer (" + why +
                   ") and the target has not completed: keeping the target's copy paused");
    },
    [self, why](const std::string& target_why) {
      hold(self, "neither host answers (source: " + why + "; target: " + target_why +
                   "): every copy stays as it is");
    });
}

void settle(job_actor* self) {
  auto& st = self->state;
  if (job_is_final(st.ctx.job.state))
    return;
  if (!st.migrate_issued) {
    // No migrate was ever sent: the target cannot have the guest.
    remove_target(self);
    return;
  }
  qmp(
    self, st.ctx.source, st.ctx.job.guest, "query-migrate", {},
    [self](const json::value& r) {
      auto& st1 = self->state;
      const auto* s = r.is_object() ? r.as_object().if_contains("status") : nullptr;
      const std::string status = s != nullptr && s->is_string() ? std::string{s->as_string()} : "";
      if (status == "completed") {
        // Running again after handing over: only this job resumes it, after
        // a fence, so the target can never run (an orchestrator restart
        // between the two lands here).
        qmp(
          self, st1.ctx.source, st1.ctx.job.guest, "query-status", {},
          [self](const json::value& q) {
            const auto* rs = q.is_object() ? q.as_object().if_contains("status") : nullptr;
            if (rs != nullptr && rs->is_string() && rs->as_string() == "running")
              remove_target(self);
            else
              fence_target(self);
          },
          [self](const std::string& why) { source_unknown(self, why); });
        return;
      }
      if (status == "none" || status == "failed" || status == "cancelled" || status.empty()) {
        remove_target(self); // the source runs the guest
        return;
      }
      // Still migrating: cancel, and ask again once it has ended.
      if (!st1.source_cancel_sent) {
        st1.source_cancel_sent = true;
        qmp(
          self, st1.ctx.source, st1.ctx.job.guest, "migrate_cancel", {}, [](const json::value&) {},
          [](const std::string&) {});
      }
      if (++st1.settle_rounds < cancel_rounds)
        self->delayed_send(self, poll_interval, settle_atom::value);
      else
        hold(self, "the source has not ended its migration (" + status + ") since migrate_cancel");
    },
    [self](const std::string& why) { source_unknown(self, why); });
}

// Ends the job in `to` (failed or cancelled) by settling.
void end_unsucceeded(job_actor* self, job_state to, const std::string& why) {
  auto& st = self->state;
  st.finishing = true;
  st.settle_to = to;
  st.settle_why = why;
  settle(self);
}

void fail(job_actor* self, const std::string& why) {
  auto& st = self->state;
  if (st.finishing)
    return;
  st.ctx.job.error = why;
  end_unsucceeded(self, job_state::failed, why);
}

void retire_source(job_actor* self) {
  auto& st = self->state;
  self->request(st.ctx.source, host_request_timeout, destroy_atom::value, st.ctx.job.guest)
    .then([self](bool) { finish(self, job_state::succeeded, "source guest retired"); },
          [self](const caf::error& err) {
            finish(self, job_state::succeeded,
                   "target runs; retiring the source failed: " + describe(err));
          });
}

// Completed on the source: the target must have completed too (it got go)
// before the source copy is removed. One that does not within the timeout
// is settled: fenced, then judged.
void confirm_target(job_actor* self) {
  auto& st = self->state;
  qmp(
    self, st.ctx.target, st.ctx.job.guest, "query-migrate", {},
    [self](const json::value& r) {
      auto& st1 = self->state;
      const auto* status = r.is_object() ? r.as_object().if_contains("status") : nullptr;
      if (status != nullptr && status->is_string() && status->as_string() == "completed") {
        st1.target_created = false; // it is the guest now
        retire_source(self);
        return;
      }
      const auto limit = std::chrono::milliseconds(st1.ctx.policy.handover_timeout_ms);
      if (clock_type::now() - st1.completing_since >= limit) {
        fail(self, "the target did not complete the hand-over within " +
                     std::to_string(limit.count()) + " ms");
        return;
      }
      self->delayed_send(self, poll_interval, poll_atom::value);
    },
    [self](const std::string& why) { fail(self, "confirming the target: " + why); });
}

// Journals a step of the ladder (before it is taken) and counts it. A step
// the journal cannot record is not taken: the job fails, which cancels its
// migration (the source runs on). False then.
bool record_step(job_actor* self, const escalation_ladder::step& step) {
  auto& st = self->state;
  if (auto ok = st.ctx.log->add_step(st.ctx.job.id, step.note); !ok) {
    fail(self, "the journal cannot record escalation step '" + step.kind + "' (" +
                 describe(ok.error()) + "): the migration is cancelled");
    return false;
  }
  self->send(st.ctx.parent, job_step_atom::value, step.kind);
  return true;
}

void give_up(job_actor* self, const escalation_ladder::step& step, uint64_t passes) {
  record_step(self, step);
  fail(self, "did not converge after " + std::to_string(passes) + " passes (" +
               self->state.ladder->tried() + ")");
}

// Takes the ladder's next rung when it is due; true if the job ended.
bool escalate(job_actor* self, const json::object& info) {
  auto& st = self->state;
  const auto& p = st.ctx.policy;
  const auto* ram = info.if_contains("ram");
  const auto* passes_v =
    ram != nullptr && ram->is_object() ? ram->as_object().if_contains("dirty-sync-count") : nullptr;
  if (passes_v == nullptr || !passes_v->is_number())
    return false;
  const auto passes = passes_v->to_number<uint64_t>();
  const auto step = st.ladder->next(passes, clock_type::now());
  const auto& guest = st.ctx.job.guest;
  switch (step.what) {
    case escalation_ladder::rung::none:
      return false;
    case escalation_ladder::rung::downtime_limit:
      if (!record_step(self, step))
        return true;
      qmp(self, st.ctx.source, guest, "migrate-set-parameters",
          {{"downtime-limit", st.ladder->downtime_ms()}}, [](const json::value&) {});
      return false;
    case escalation_ladder::rung::auto_converge:
      if (!record_step(self, step))
        return true;
      qmp(self, st.ctx.source, guest, "migrate-set-parameters",
          {{"max-cpu-throttle", 99}, {"cpu-throttle-initial", 20}}, [](const json::value&) {});
      return false;
    case escalation_ladder::rung::dirty_limit:
      // A runtime limit rather than the dirty-limit capability: capabilities
      // are fixed once a migration runs, and QEMU refuses that one next to
      // auto-converge.
      if (!record_step(self, step))
        return true;
      qmp(
        self, st.ctx.source, guest, "set-vcpu-dirty-limit", {{"dirty-rate", p.dirty_limit_mib_s}},
        [](const json::value&) {},
        [self, passes](const std::string& why) {
          auto& st1 = self->state;
          const auto last = st1.ladder->dirty_limit_refused(passes, why);
          if (!st1.finishing)
            give_up(self, last, passes);
        });
      return false;
    case escalation_ladder::rung::cancel:
      give_up(self, step, passes);
      return true;
  }
  return false;
}

void poll_migration(job_actor* self) {
  auto& st = self->state;
  if (st.ctx.job.state == job_state::completing) {
    confirm_target(self);
    return;
  }
  qmp(self, st.ctx.source, st.ctx.job.guest, "query-migrate", {}, [self](const json::value& r) {
    auto& st1 = self->state;
    if (st1.finishing)
      return;
    const auto& o = r.as_object();
    const auto* s = o.if_contains("status");
    const std::string status = s != nullptr && s->is_string() ? std::string{s->as_string()} : "";
    st1.progress = o;
    // The limit in force (the ladder raises it), for the API and for judging
    // the final downtime.
    st1.progress["downtime-limit"] = st1.ladder->downtime_ms();
    if (status == "completed") {
      report(self); // the final figures: total-time, downtime
      st1.completing_since = clock_type::now();
      if (move(self, job_state::completing, "source reports completed"))
        confirm_target(self);
      return;
    }
    if (status == "failed") {
      const auto* d = o.if_contains("error-desc");
      st1.migrate_issued = false;
      fail(self, d != nullptr && d->is_string() ? std::string{d->as_string()}
                                                : std::string{"migration failed"});
      return;
    }
    if (status == "cancelled") {
      st1.migrate_issued = false;
      if (st1.cancel_requested)
        end_unsucceeded(self, job_state::cancelled, "cancelled by request");
      else
        fail(self, "migration was cancelled on the source");
      return;
    }
    report(self);
    const auto now = clock_type::now();
    if (const auto* ram = o.if_contains("ram"); ram != nullptr && ram->is_object()) {
      if (const auto* rem = ram->as_object().if_contains("remaining"); rem && rem->is_number()) {
        const auto remaining = rem->to_number<uint64_t>();
        if (remaining < st1.best_remaining) {
          st1.best_remaining = remaining;
          st1.last_progress = now;
        }
      }
    }
    if (escalate(self, o))
      return;
    const auto& p = st1.ctx.policy;
    const double gib = static_cast<double>(st1.ctx.job.memory) / double(1 << 30);
    const auto limit =
      std::chrono::duration<double>(std::max(1.0, gib) * p.completion_timeout_s_per_gib);
    if (now - st1.last_progress > std::chrono::seconds(p.progress_timeout_s)) {
      fail(self, "no progress for " + std::to_string(p.progress_timeout_s) + " s");
      return;
    }
    if (now - st1.started > limit) {
      fail(self, "not complete within the completion timeout");
      return;
    }
    self->delayed_send(self, poll_interval, poll_atom::value);
  });
}

void start_migration(job_actor* self) {
  auto& st = self->state;
  if (!move(self, job_state::running, "migrate " + st.uri))
    return;
  st.started = st.last_progress = clock_type::now();
  st.migrate_issued = true;
  qmp(self, st.ctx.source, st.ctx.job.guest, "migrate", {{"uri", st.uri}},
      [self](const json::value&) { self->delayed_send(self, poll_interval, poll_atom::value); });
}

// The destination needs only what shapes the stream; the source also gets
// auto-converge when the ladder may use it (capabilities cannot change while
// a migration runs, so it is on from the start, its throttle capped at 1 %
// until the ladder's step lifts the cap).
json::object capabilities(const migration_policy& p, bool source) {
  json::array caps{json::object{{"capability", "events"}, {"state", true}}};
  if (p.multifd_channels > 0)
    caps.push_back(json::object{{"capability", "multifd"}, {"state", true}});
  if (source && p.auto_converge_step)
    caps.push_back(json::object{{"capability", "auto-converge"}, {"state", true}});
  return {{"capabilities", std::move(caps)}};
}

void configure_and_listen(job_actor* self, uint16_t port) {
  auto& st = self->state;
  const auto& p = st.ctx.policy;
  st.uri = "tcp:" + st.ctx.target_address + ":" + std::to_string(port);
  json::object src_params{{"max-bandwidth", p.max_bandwidth},
                          {"downtime-limit", p.downtime_limit_ms}};
  if (p.auto_converge_step) {
    src_params["cpu-throttle-initial"] = 1;
    src_params["max-cpu-throttle"] = 1;
  }
  json::object dst_params;
  if (p.multifd_channels > 0) {
    src_params["multifd-channels"] = p.multifd_channels;
    dst_params["multifd-channels"] = p.multifd_channels;
  }
  const auto& guest = st.ctx.job.guest;
  qmp(self, st.ctx.target, guest, "migrate-set-capabilities", capabilities(p, false),
      [self, dst_params, src_params, guest](const json::value&) {
        auto& st1 = self->state;
        qmp(self, st1.ctx.target, guest, "migrate-set-parameters", dst_params,
            [self, src_params, guest](const json::value&) {
              auto& st2 = self->state;
              qmp(self, st2.ctx.source, guest, "migrate-set-capabilities",
                  capabilities(st2.ctx.policy, true),
                  [self, src_params, guest](const json::value&) {
                    auto& st3 = self->state;
                    qmp(self, st3.ctx.source, guest, "migrate-set-parameters", src_params,
                        [self, guest](const json::value&) {
                          auto& st4 = self->state;
                          qmp(self, st4.ctx.target, guest, "migrate-incoming", {{"uri", st4.uri}},
                              [self](const json::value&) { start_migration(self); });
                        });
                  });
            });
      });
}

void prepare_target(job_actor* self, guest_spec spec) {
  auto& st = self->state;
  st.ctx.job.memory = spec.memory;
  if (!move(self, job_state::preparing_target,
            "create '" + spec.name + "' on " + st.ctx.job.target))
    return;
  spec.incoming = true;
  spec.mem_path.clear(); // the target's RAM is its own
  self->request(st.ctx.target, create_request_timeout, create_atom::value, spec)
    .then(
      [self](const guest_info& info) {
        self->state.target_created = true;
        if (self->state.cancel_requested) {
          end_unsucceeded(self, job_state::cancelled, "cancelled by request");
          return;
        }
        configure_and_listen(self, info.migration_port);
      },
      [self](const caf::error& err) { fail(self, "creating the target guest: " + describe(err)); });
}

void begin(job_actor* self) {
  auto& st = self->state;
  self->request(st.ctx.source, host_request_timeout, list_atom::value)
    .then(
      [self](const std::vector<guest_info>& guests) {
        auto& st1 = self->state;
        for (const auto& g : guests)
          if (g.spec.name == st1.ctx.job.guest) {
            // Whether it runs: a source that has to take the guest back
            // after a hand-over resumes it only if it ran.
            qmp(self, st1.ctx.source, st1.ctx.job.guest, "query-status", {},
                [self, spec = g.spec](const json::value& r) {
                  const auto* s = r.is_object() ? r.as_object().if_contains("status") : nullptr;
                  self->state.source_ran =
                    s == nullptr || !s->is_string() || s->as_string() != "paused";
                  prepare_target(self, spec);
                });
            return;
          }
        fail(self, "guest '" + st1.ctx.job.guest + "' is not on " + st1.ctx.job.source);
      },
      [self](const caf::error& err) { fail(self, "listing the source: " + describe(err)); });
}

// After an orchestrator restart: the agents carried on without us. Find out
// from them how far the job got and continue from there.
void resume(job_actor* self) {
  auto& st = self->state;
  const auto& job = st.ctx.job;
  std::vector<std::string> taken;
  for (const auto& s : st.ctx.log->steps())
    if (s.job == job.id)
      taken.push_back(s.step);
  st.ladder->restore(taken, clock_type::now());
  if (job.state == job_state::scheduling) {
    begin(self);
    return;
  }
  self->request(st.ctx.target, host_request_timeout, list_atom::value)
    .then(
      [self](const std::vector<guest_info>& on_target) {
        auto& st1 = self->state;
        st1.target_created = std::any_of(on_target.begin(), on_target.end(), [&](const auto& g) {
          return g.spec.name == st1.ctx.job.guest;
        });
        if (st1.ctx.job.state == job_state::completing) {
          st1.completing_since = clock_type::now();
          self->request(st1.ctx.source, host_request_timeout, list_atom::value)
            .then(
              [self](const std::vector<guest_info>& on_source) {
                auto& st2 = self->state;
                const bool source_there =
                  std::any_of(on_source.begin(), on_source.end(),
                              [&](const auto& g) { return g.spec.name == st2.ctx.job.guest; });
                if (!source_there && st2.target_created) {
                  st2.target_created = false;
                  finish(self, job_state::succeeded, "found retired after restart");
                  return;
                }
                confirm_target(self);
              },
              [self](const caf::error& err) {
                fail(self, "listing the source: " + describe(err));
              });
          return;
        }
        // preparing-target or running: ask the source what it is doing.
        qmp(self, st1.ctx.source, st1.ctx.job.guest, "query-migrate", {},
            [self](const json::value& r) {
              auto& st2 = self->state;
              const auto* s = r.as_object().if_contains("status");
              const std::string status =
                s != nullptr && s->is_string() ? std::string{s->as_string()} : "none";
              if (status == "none" || status == "failed" || status == "cancelled") {
                // Never started (or already over): nothing to follow.
                fail(self,
                     "orchestrator restarted before the migration ran (source: " + status + ")");
                return;
              }
              if (st2.ctx.job.state == job_state::preparing_target &&
                  !move(self, job_state::running, "found running after restart"))
                return;
              st2.migrate_issued = true;
              st2.started = st2.last_progress = clock_type::now();
              poll_migration(self);
            });
      },
      [self](const caf::error& err) { fail(self, "listing the target: " + describe(err)); });
}

job_impl::behavior_type job(job_actor* self, job_context ctx) {
  self->state.ctx = std::move(ctx);
  self->state.ladder.emplace(self->state.ctx.policy);
  // A host that goes away mid-job fails its requests; the job then fails.
  self->set_default_handler(caf::drop);
  // A bug here must not leave the job hanging in the journal: say what
  // happened and let the parent (which monitors the job) fail it.
  self->set_exception_handler([self](std::exception_ptr& eptr) -> caf::error {
    std::string what = "unknown exception";
    try {
      std::rethrow_exception(eptr);
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
    }
    log::error("job {} ({}): {}", self->state.ctx.job.id, self->state.ctx.job.guest, what);
    return make_orchestrator_error(orchestrator_errc::invalid_request, "job failed: " + what);
  });
  if (self->state.ctx.resume)
    resume(self);
  else
    begin(self);
  return {
    [self](poll_atom) {
      if (!self->state.finishing) // settling has taken over
        poll_migration(self);
    },
    [self](settle_atom) { settle(self); },
    [self](host_lost_atom, const std::string& host) {
      // Its requests to that host would only time out: end the job now,
      // by settling (which asks whichever host still answers).
      fail(self, "host " + host + " went down");
    },
    [self](host_up_atom, const std::string& host, const host_actor& handle) {
      // A job waiting for an answer asks the new link at its next round.
      auto& st = self->state;
      if (host == st.ctx.job.source)
        st.ctx.source = handle;
      if (host == st.ctx.job.target)
        st.ctx.target = handle;
    },
    [self](cancel_atom) {
      auto& st = self->state;
      if (st.cancel_requested || st.finishing)
        return;
      st.cancel_requested = true;
      if (st.migrate_issued) {
        qmp(self, st.ctx.source, st.ctx.job.guest, "migrate_cancel", {}, [](const json::value&) {});
        return; // the poll sees "cancelled" and cleans up
      }
      if (st.ctx.job.state == job_state::completing)
        return; // too late: the guest already runs on the target
      if (st.ctx.job.state == job_state::scheduling) {
        st.finishing = true;
        finish(self, job_state::cancelled, "cancelled by request");
      }
      // preparing-target: the create reply sees cancel_requested.
    },
  };
}

} // namespace

migration_job_actor spawn_migration_job(caf::actor_system& sys, job_context ctx) {
  return sys.spawn(job, std::move(ctx));
}

} // namespace ferry
