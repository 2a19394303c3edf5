// Settling: how a job that does not simply succeed ends without ever
// running two copies of its guest or destroying one that may be the only
// one (docs/orchestrator.md, "The hand-over invariant"; the model in
// tools/model/handover.pml checks these steps). What the job relies on:
// a source whose migration is not `completed` never sent go, so the target
// cannot run; migrate_cancel on a target fences it (afterwards it either
// completed — it is the guest — or never will); a fenced target goes only
// after the source took the guest back; nothing is destroyed or resumed
// without an answer from the host that holds it.

#include "orchestrator/job_actor.hpp"

#include "common/error.hpp"
#include "common/log.hpp"

#include <algorithm>

namespace ferry::job_detail {

namespace {

// The guest turned out to be on the target: the job ends succeeded, through
// completing (the journal's state machine) if it was still running.
void arrived(job_actor* self, const std::string& note) {
  if (self->state.figures_pending) {
    self->state.arrival = note;
    return;
  }
  if (self->state.ctx.job.state != job_state::completing &&
      !move(self, job_state::completing, "the target completed the hand-over"))
    return;
  finish(self, job_state::succeeded, note);
}

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

// The target after a fence: completed = it is the guest; anything else =
// it will never run, and the source takes the guest back.
void judge_fenced_target(job_actor* self) {
  auto& st = self->state;
  qmp(
    self, st.ctx.target, st.ctx.job.guest, "query-migrate", {},
    [self](const json::value& r) {
      if (status_of(r) == "completed") {
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
        const bool there = lists_guest(guests, st1.ctx.job.guest);
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
      if (status_of(r) == "completed") {
        auto& st1 = self->state;
        st1.target_created = false;
        st1.ctx.job.error.clear();
        arrived(self, "the guest is on the target; the source does not answer (" + why +
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

} // namespace

void target_won(job_actor* self, const std::string& note) {
  auto& st = self->state;
  st.target_created = false;
  st.ctx.job.error.clear();
  self->request(st.ctx.source, host_request_timeout, destroy_atom::value, st.ctx.job.guest)
    .then([self, note](bool) { arrived(self, note + "; source copy retired"); },
          [self, note](const caf::error& err) {
            arrived(self,
                    note + "; the source's stale copy (paused, never to be resumed) could not be " +
                      "retired now: " + describe(err));
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
      const std::string status = status_of(r);
      if (status == "completed") {
        // Running again after handing over: only this job resumes it, after
        // a fence, so the target can never run (an orchestrator restart
        // between the two lands here).
        qmp(
          self, st1.ctx.source, st1.ctx.job.guest, "query-status", {},
          [self](const json::value& q) {
            if (status_of(q) == "running")
              remove_target(self);
            else
              fence_target(self);
          },
          [self](const std::string& why) { source_unknown(self, why); });
        return;
      }
      if (status.rfind("postcopy-", 0) == 0) {
        // It switched meanwhile: the guest runs on the target; follow it.
        st1.finishing = false;
        st1.in_postcopy = true;
        follow_postcopy(self, status, ++st1.poll_token);
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
  if (staging(st)) {
    drop_stage(self, why);
    return;
  }
  st.finishing = true;
  st.settle_to = to;
  st.settle_why = why;
  settle(self);
}

void fail(job_actor* self, const std::string& why) {
  auto& st = self->state;
  if (st.finishing || postcopy_trouble(self, why))
    return;
  if (staging(st)) {
    drop_stage(self, why);
    return;
  }
  st.ctx.job.error = why;
  end_unsucceeded(self, job_state::failed, why);
}

void figures_in(job_actor* self) {
  auto& st = self->state;
  st.figures_pending = false;
  if (st.arrival) {
    const auto note = *st.arrival;
    st.arrival.reset();
    arrived(self, note);
  }
}

void drop_stage(job_actor* self, const std::string& why) {
  auto& st = self->state;
  if (st.finishing)
    return;
  st.finishing = true;
  log::info("job {} ({}): not prepared ahead ({}); it starts when its slot comes", st.ctx.job.id,
            st.ctx.job.guest, why);
  // A create still on its way leaves a target no running job owns: the
  // cluster's orphan sweeper removes it.
  if (st.target_created)
    caf::anon_send(st.ctx.target, destroy_atom::value, st.ctx.job.guest);
  self->send(st.ctx.parent, stage_dropped_atom::value, st.ctx.job.id);
  self->quit();
}

} // namespace ferry::job_detail
