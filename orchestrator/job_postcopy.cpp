// A migration job from the ladder's postcopy rung on: once the source
// switches, the guest runs on the target and its remaining pages follow.
// Nothing is cancelled or taken back from then on (the source's copy is
// stale). A broken link pauses both sides; the job recovers it on its own —
// migrate-recover on the target, migrate resume=true on the source — after
// a backoff that doubles per attempt, each attempt journaled, so a restarted
// orchestrator finds the job in postcopy and goes on. Only a target that
// lost the guest ends the job early: failed, nothing destroyed, the source's
// stale copy abandoned and kept paused (docs/orchestrator.md, "Postcopy").

#include "orchestrator/job_actor.hpp"

#include "common/error.hpp"
#include "common/log.hpp"

namespace ferry::job_detail {

namespace {

constexpr auto first_backoff = std::chrono::seconds(1);

bool switched(const std::string& status) {
  return status.rfind("postcopy-", 0) == 0;
}

// Figures the API and metrics show besides the source's: time paused so
// far, the target's vCPU blocktime.
void add_postcopy_figures(job_state_data& st) {
  auto paused = st.paused_before;
  if (st.paused_since)
    paused += clock_type::now() - *st.paused_since;
  st.progress["postcopy-paused-time"] =
    std::chrono::duration_cast<std::chrono::milliseconds>(paused).count();
  if (st.target_blocktime_ms)
    st.progress["postcopy-blocktime"] = *st.target_blocktime_ms;
}

void next_round(job_actor* self, uint64_t token, clock_type::duration after = poll_interval) {
  self->delayed_send(self, after, poll_atom::value, token);
}

// The target's copy is gone (or failed): the guest is lost, as QEMU's
// postcopy loses it. The source's copy is abandoned — its migration fails
// and it stays paused — and both hosts keep whatever they have.
void guest_lost(job_actor* self, const std::string& why) {
  auto& st = self->state;
  if (st.finishing)
    return;
  st.finishing = true;
  st.ctx.job.error = "the guest was lost in postcopy: " + why +
                     "; the source's copy is stale (it lacks what the guest did on the target "
                     "since the switch) and stays paused: resume it by hand only knowing that";
  log::error("job {} ({}): {}", st.ctx.job.id, st.ctx.job.guest, st.ctx.job.error);
  const auto end = [self](auto&&...) {
    auto& st1 = self->state;
    finish(self, job_state::failed, st1.ctx.job.error);
  };
  qmp(self, st.ctx.source, st.ctx.job.guest, "migrate_cancel", {}, end, end);
}

// The source's migration ended without completing. A target that ran the
// guest (in postcopy or past it) holds the only live copy: nothing is
// removed or resumed. One that never switched never ran: the plain
// settling ends the job, the source keeps the guest.
void source_ended(job_actor* self, const std::string& status) {
  auto& st = self->state;
  const std::string desc = [&] {
    const auto* d = st.progress.if_contains("error-desc");
    return d != nullptr && d->is_string() ? std::string{d->as_string()} : status;
  }();
  qmp(
    self, st.ctx.target, st.ctx.job.guest, "query-migrate", {},
    [self, desc](const json::value& r) {
      auto& st1 = self->state;
      const auto target = status_of(r, "none");
      if (switched(target) || target == "completed") {
        st1.finishing = true;
        st1.ctx.job.error = "postcopy ended on the source (" + desc + ") with the target at " +
                            target + ": both copies are kept as they are";
        finish(self, job_state::failed, st1.ctx.job.error);
        return;
      }
      st1.in_postcopy = false; // it never switched: settle as any failure
      st1.migrate_issued = false;
      fail(self, desc);
    },
    [self](const std::string& why) { postcopy_trouble(self, "asking the target: " + why); });
}

// One recovery attempt's last step: the source reconnects in the same
// session; the rounds see it through postcopy-recover to postcopy-active.
void resume_source(job_actor* self) {
  auto& st = self->state;
  qmp(
    self, st.ctx.source, st.ctx.job.guest, "migrate", {{"uri", st.uri}, {"resume", true}},
    [self](const json::value&) { self->state.recovering = false; },
    [self](const std::string& why) {
      self->state.recovering = false;
      log::warn("job {}: resuming the source: {}", self->state.ctx.job.id, why);
    });
}

// The target cannot say: a host that answers without the guest lost it;
// one that does not answer may come back (its guest runs on meanwhile).
void target_silent(job_actor* self, const std::string& why) {
  auto& st = self->state;
  self->request(st.ctx.target, host_request_timeout, list_atom::value)
    .then(
      [self, why](const std::vector<guest_info>& guests) {
        auto& st1 = self->state;
        st1.recovering = false;
        if (!lists_guest(guests, st1.ctx.job.guest))
          guest_lost(self, "its target host " + st1.ctx.job.target + " no longer runs it");
        else
          log::warn("job {}: the target does not answer ({}); recovery retried", st1.ctx.job.id,
                    why);
      },
      [self](const caf::error& err) {
        self->state.recovering = false;
        log::warn("job {}: the target host does not answer ({}); recovery retried",
                  self->state.ctx.job.id, describe(err));
      });
}

// A recovery attempt: the target listens again on the guest's migration
// port (migrate-recover), then the source resumes. A target that has not
// noticed the break yet is paused first; one already listening (an earlier
// attempt's) is resumed to at once.
void recover(job_actor* self) {
  auto& st = self->state;
  st.recovering = true;
  ++st.recover_attempts;
  const auto max = std::chrono::seconds(st.ctx.policy.postcopy_recover_backoff_max_s);
  st.recover_backoff = st.recover_backoff.count() == 0
                         ? std::min<std::chrono::seconds>(first_backoff, max)
                         : std::min(st.recover_backoff * 2, max);
  st.next_recover = clock_type::now() + st.recover_backoff;
  const std::string note =
    "postcopy-recover attempt " + std::to_string(st.recover_attempts) + " on " + st.uri;
  if (auto ok = st.ctx.log->add_step(st.ctx.job.id, note); !ok)
    log::warn("job {}: the journal cannot record '{}': {}", st.ctx.job.id, note,
              describe(ok.error()));
  self->send(st.ctx.parent, job_step_atom::value, std::string{"postcopy-recover"});
  log::info("job {} ({}): {}", st.ctx.job.id, st.ctx.job.guest, note);
  qmp(
    self, st.ctx.target, st.ctx.job.guest, "query-migrate", {},
    [self](const json::value& r) {
      auto& st1 = self->state;
      const auto target = status_of(r, "none");
      if (target == "postcopy-paused") {
        qmp(
          self, st1.ctx.target, st1.ctx.job.guest, "migrate-recover", {{"uri", st1.uri}},
          [self](const json::value&) { resume_source(self); },
          [self](const std::string& why) {
            self->state.recovering = false;
            log::warn("job {}: migrate-recover: {}", self->state.ctx.job.id, why);
          });
      } else if (target == "postcopy-recover") {
        resume_source(self);
      } else if (target == "postcopy-active") {
        // Only the source saw the break: pause the target too, and let the
        // next attempt come at once.
        st1.next_recover = clock_type::now();
        qmp(
          self, st1.ctx.target, st1.ctx.job.guest, "migrate-pause", {},
          [self](const json::value&) { self->state.recovering = false; },
          [self](const std::string&) { self->state.recovering = false; });
      } else if (target == "completed") {
        st1.recovering = false; // the source learns it on its next link
      } else {
        guest_lost(self, "the target's incoming migration is " + target);
      }
    },
    [self](const std::string& why) { target_silent(self, why); });
}

} // namespace

void postcopy_flowing(job_actor* self) {
  auto& st = self->state;
  if (!st.paused_since)
    return;
  st.paused_before += clock_type::now() - *st.paused_since;
  st.paused_since.reset();
  const std::string note =
    "postcopy recovered after " + std::to_string(st.recover_attempts) + " attempt(s)";
  (void) st.ctx.log->add_step(st.ctx.job.id, note);
  self->send(st.ctx.parent, job_step_atom::value, std::string{"postcopy-recovered"});
  log::info("job {} ({}): {}", st.ctx.job.id, st.ctx.job.guest, note);
  st.recover_attempts = 0;
  st.recover_backoff = {};
  st.ctx.job.error.clear();
}

void start_postcopy(job_actor* self) {
  auto& st = self->state;
  st.in_postcopy = true;
  qmp(
    self, st.ctx.source, st.ctx.job.guest, "migrate-start-postcopy", {}, [](const json::value&) {},
    [self](const std::string& why) {
      auto& st1 = self->state;
      st1.in_postcopy = false; // still precopy: the plain failure cancels it
      fail(self, why);
    });
}

void follow_postcopy(job_actor* self, const std::string& status, uint64_t token) {
  auto& st = self->state;
  st.in_postcopy = true;
  st.migrate_issued = true;
  const auto now = clock_type::now();
  if (status == "failed" || status == "cancelled" || status == "none") {
    source_ended(self, status);
    return;
  }
  if (status == "postcopy-paused" || status == "postcopy-recover") {
    if (!st.paused_since) {
      st.paused_since = now;
      st.next_recover = now;
      st.ctx.job.error = "postcopy paused: the link to the target broke; recovering";
      log::warn("job {} ({}): {}", st.ctx.job.id, st.ctx.job.guest, st.ctx.job.error);
    }
    if (status == "postcopy-paused" && !st.recovering && now >= st.next_recover)
      recover(self);
  } else if (status == "postcopy-active") {
    postcopy_flowing(self);
    // The target measures how long its vCPUs wait for pages.
    qmp(
      self, st.ctx.target, st.ctx.job.guest, "query-migrate", {},
      [self](const json::value& r) {
        const auto* b = r.is_object() ? r.as_object().if_contains("postcopy-blocktime") : nullptr;
        if (b != nullptr && b->is_number())
          self->state.target_blocktime_ms = b->to_number<uint64_t>();
      },
      [](const std::string&) {});
  }
  add_postcopy_figures(st);
  report(self);
  next_round(self, token);
}

bool postcopy_trouble(job_actor* self, const std::string& why) {
  auto& st = self->state;
  if (!st.in_postcopy || st.finishing)
    return false;
  if (st.ctx.job.error != why) {
    st.ctx.job.error = why;
    log::warn("job {} ({}): in postcopy: {}; the job goes on", st.ctx.job.id, st.ctx.job.guest,
              why);
    report(self);
  }
  st.recovering = false;
  next_round(self, ++st.poll_token, hold_retry);
  return true;
}

} // namespace ferry::job_detail
