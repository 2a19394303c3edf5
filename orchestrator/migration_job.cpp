#include "orchestrator/migration_job.hpp"

#include "common/error.hpp"
#include "common/log.hpp"
#include "orchestrator/job_actor.hpp"
#include "orchestrator/orchestrator_error.hpp"

#include <caf/all.hpp>

#include <boost/json.hpp>

#include <chrono>
#include <cstdio>
#include <functional>
#include <memory>
#include <optional>
#include <vector>

namespace ferry {

namespace {

using namespace job_detail;

// Completed on the source: the target must have completed too (it got go)
// before the source copy is removed. One that does not within the timeout
// is settled: fenced, then judged.
void confirm_target(job_actor* self) {
  auto& st = self->state;
  if (st.target_completed) {
    target_won(self, "the target completed the hand-over");
    return;
  }
  qmp(
    self, st.ctx.target, st.ctx.job.guest, "query-migrate", {},
    [self, token = st.poll_token](const json::value& r) {
      auto& st1 = self->state;
      // A confirmed target wins even over settling begun meanwhile (its
      // source's host went down): the guest runs there.
      if (token != st1.poll_token)
        return; // a newer round took over
      if (status_of(r) == "completed") {
        target_won(self, "the target completed the hand-over");
        return;
      }
      const auto limit = std::chrono::milliseconds(st1.ctx.policy.handover_timeout_ms);
      if (clock_type::now() - st1.completing_since >= limit) {
        fail(self, "the target did not complete the hand-over within " +
                     std::to_string(limit.count()) + " ms");
        return;
      }
      self->delayed_send(self, poll_interval, poll_atom::value, token);
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
          if (!st1.finishing && last.what == escalation_ladder::rung::cancel)
            give_up(self, last, passes);
        });
      return false;
    case escalation_ladder::rung::postcopy:
      if (!record_step(self, step))
        return true;
      start_postcopy(self);
      return false;
    case escalation_ladder::rung::cancel:
      give_up(self, step, passes);
      return true;
  }
  return false;
}

// The status a MIGRATION event carries ("" for one without), or nothing
// for any other event.
std::optional<std::string> migration_event_status(const std::string& text) {
  boost::system::error_code ec;
  const auto v = json::parse(text, ec);
  if (ec || !v.is_object())
    return std::nullopt;
  const auto* name = v.as_object().if_contains("event");
  if (name == nullptr || !name->is_string() || name->as_string() != "MIGRATION")
    return std::nullopt;
  const auto* data = v.as_object().if_contains("data");
  return data != nullptr ? status_of(*data) : std::string{};
}

// The source completed, by its event or a round's query. A recovered
// postcopy may complete before any round saw it flowing again: its
// recovery is recorded here, whichever told.
void source_done(job_actor* self) {
  auto& st = self->state;
  if (st.in_postcopy)
    postcopy_flowing(self);
  st.completing_since = clock_type::now();
}

// The source's MIGRATION event said completed: the job moves on at once,
// confirming the target while it asks the source for the final figures
// (total-time, downtime) instead of one after the other.
void source_completed(job_actor* self) {
  auto& st = self->state;
  source_done(self);
  if (!move(self, job_state::completing, "source reports completed"))
    return;
  st.figures_pending = true;
  qmp(
    self, st.ctx.source, st.ctx.job.guest, "query-migrate", {},
    [self](const json::value& r) {
      auto& st1 = self->state;
      if (r.is_object()) {
        st1.progress = r.as_object();
        st1.progress["downtime-limit"] = st1.ladder->downtime_ms();
        report(self);
      }
      figures_in(self);
    },
    [self](const std::string&) { figures_in(self); }); // figures are not the hand-over
  confirm_target(self);
}

void poll_migration(job_actor* self) {
  auto& st = self->state;
  if (st.ctx.job.state == job_state::completing) {
    confirm_target(self);
    return;
  }
  const uint64_t token = st.poll_token;
  qmp(self, st.ctx.source, st.ctx.job.guest, "query-migrate", {},
      [self, token](const json::value& r) {
        auto& st1 = self->state;
        if (st1.finishing || token != st1.poll_token)
          return;
        const auto& o = r.as_object();
        const std::string status = status_of(r);
        st1.progress = o;
        // The limit in force (the ladder raises it), for the API and for judging
        // the final downtime.
        st1.progress["downtime-limit"] = st1.ladder->downtime_ms();
        if (status == "completed") {
          source_done(self);
          report(self); // the final figures: total-time, downtime
          if (move(self, job_state::completing, "source reports completed"))
            confirm_target(self);
          return;
        }
        if (st1.in_postcopy || status.rfind("postcopy-", 0) == 0) {
          follow_postcopy(self, status, token);
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
          if (const auto* rem = ram->as_object().if_contains("remaining");
              rem && rem->is_number()) {
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
        self->delayed_send(self, poll_interval, poll_atom::value, token);
      });
}

} // namespace

namespace job_detail {

void start_migration(job_actor* self) {
  auto& st = self->state;
  if (!move(self, job_state::running, "migrate " + st.uri))
    return;
  st.started = st.last_progress = clock_type::now();
  st.migrate_issued = true;
  if (st.ctx.staged) // the guest may have been paused or resumed while the job waited
    qmp(self, st.ctx.source, st.ctx.job.guest, "query-status", {},
        [self](const json::value& r) { self->state.source_ran = status_of(r) != "paused"; });
  qmp(self, st.ctx.source, st.ctx.job.guest, "migrate", {{"uri", st.uri}},
      [self](const json::value&) {
        // (Tests: a fault aimed at running lands mid-precopy.)
        fault_point(self->state.ctx.job, job_state::running);
        self->delayed_send(self, poll_interval, poll_atom::value, self->state.poll_token);
      });
}

} // namespace job_detail

namespace {

void begin(job_actor* self) {
  auto& st = self->state;
  self->request(st.ctx.source, host_request_timeout, list_atom::value)
    .then(
      [self](const std::vector<guest_info>& guests) {
        auto& st1 = self->state;
        for (const auto& g : guests)
          if (g.spec.name == st1.ctx.job.guest) {
            prepare_target(self, g.spec);
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
  // Recovery attempts of the pause under way (if any) count on.
  for (const auto& s : taken)
    if (s.rfind("postcopy-recover attempt", 0) == 0)
      ++st.recover_attempts;
    else if (s.rfind("postcopy recovered", 0) == 0)
      st.recover_attempts = 0;
  if (job.state == job_state::scheduling) {
    begin(self);
    return;
  }
  self->request(st.ctx.target, host_request_timeout, list_atom::value)
    .then(
      [self](const std::vector<guest_info>& on_target) {
        auto& st1 = self->state;
        for (const auto& g : on_target)
          if (g.spec.name == st1.ctx.job.guest) {
            st1.target_created = true;
            // Where the target listens (a postcopy recovery listens there
            // again).
            st1.uri = "tcp:" + st1.ctx.target_address + ":" + std::to_string(g.migration_port);
          }
        if (st1.ctx.job.state == job_state::completing) {
          st1.completing_since = clock_type::now();
          self->request(st1.ctx.source, host_request_timeout, list_atom::value)
            .then(
              [self](const std::vector<guest_info>& on_source) {
                auto& st2 = self->state;
                const bool source_there = lists_guest(on_source, st2.ctx.job.guest);
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
              const std::string status = status_of(r, "none");
              // Postcopy was asked for: the guest may run on the target,
              // and whatever the source says, the job follows it there.
              st2.in_postcopy = st2.ladder->in_postcopy();
              if (!st2.in_postcopy &&
                  (status == "none" || status == "failed" || status == "cancelled")) {
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

// A MIGRATION event on either side (or a side's guest gone: "") is news the
// next round would only find later: take it now.
void on_migration_event(job_actor* self, const std::string& host, const std::string& event) {
  auto& st = self->state;
  if (st.finishing || !st.migrate_issued ||
      (st.ctx.job.state != job_state::running && st.ctx.job.state != job_state::completing))
    return;
  if (!event.empty()) {
    const auto status = migration_event_status(event);
    if (!status)
      return;
    // What confirm_target would ask the target, told by the target.
    if (*status == "completed" && host == st.ctx.job.target)
      st.target_completed = true;
    if (*status == "completed" && host == st.ctx.job.source &&
        st.ctx.job.state == job_state::running) {
      ++st.poll_token; // rounds still out end quietly
      source_completed(self);
      return;
    }
  }
  ++st.poll_token;
  poll_migration(self);
}

// The slot, journaled by the cluster (scheduling). Sides not asked for yet
// are prepared the plain way; sides ready (or on their way) are journaled
// as prepared and the migration starts once both are.
void on_go(job_actor* self) {
  auto& st = self->state;
  if (!staging(st) || st.finishing)
    return;
  st.granted = true;
  st.ctx.job.state = job_state::scheduling;
  if (!st.preparing)
    return;
  if (!move(self, job_state::preparing_target,
            "'" + st.ctx.job.guest + "' prepared on " + st.ctx.job.target + " while waiting"))
    return;
  if (st.sides_ready == 2)
    judge_sides(self);
}

void on_cancel(job_actor* self) {
  auto& st = self->state;
  if (staging(st)) {
    drop_stage(self, "cancelled by request");
    return;
  }
  if (st.cancel_requested || st.finishing)
    return;
  if (st.in_postcopy) {
    log::warn("job {} ({}): not cancelled: in postcopy the guest runs on the target", st.ctx.job.id,
              st.ctx.job.guest);
    return;
  }
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
    [self](poll_atom, uint64_t token) {
      // Not when settling has taken over, nor for a round an event replaced.
      if (!self->state.finishing && token == self->state.poll_token)
        poll_migration(self);
    },
    [self](qmp_event_atom, const std::string& host, const std::string&, const std::string& event) {
      on_migration_event(self, host, event);
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
    [self](go_atom) { on_go(self); },
    [self](cancel_atom) { on_cancel(self); },
  };
}

} // namespace

migration_job_actor spawn_migration_job(caf::actor_system& sys, job_context ctx) {
  return sys.spawn(job, std::move(ctx));
}

} // namespace ferry
