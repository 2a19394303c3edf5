// A migration job's preparation: the target guest created and configured
// while the source is asked and configured; the migration starts once both
// sides are ready (or the job ends on the first error).
#include "orchestrator/job_actor.hpp"

#include "common/error.hpp"
#include "common/log.hpp"

#include <algorithm>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace ferry::job_detail {

namespace {

// The destination needs only what shapes the stream; the source also gets
// auto-converge when the ladder may use it (capabilities cannot change while
// a migration runs, so it is on from the start, its throttle capped at 1 %
// until the ladder's step lifts the cap).
json::object capabilities(const migration_policy& p, bool source) {
  // x-colo off: a guest that was in a COLO pair keeps the capability.
  json::array caps{json::object{{"capability", "events"}, {"state", true}},
                   json::object{{"capability", "x-colo"}, {"state", false}}};
  if (p.multifd_channels > 0)
    caps.push_back(json::object{{"capability", "multifd"}, {"state", true}});
  if (source && p.auto_converge_step)
    caps.push_back(json::object{{"capability", "auto-converge"}, {"state", true}});
  if (p.postcopy_step) {
    // The rung may come: both sides must have postcopy from the start; the
    // target also measures how long its vCPUs wait for pages.
    caps.push_back(json::object{{"capability", "postcopy-ram"}, {"state", true}});
    if (p.postcopy_preempt)
      caps.push_back(json::object{{"capability", "postcopy-preempt"}, {"state", true}});
    if (!source)
      caps.push_back(json::object{{"capability", "postcopy-blocktime"}, {"state", true}});
  }
  return {{"capabilities", std::move(caps)}};
}

json::object source_parameters(const job_state_data& st) {
  const auto& p = st.ctx.policy;
  json::object params{{"max-bandwidth", p.max_bandwidth}, {"downtime-limit", p.downtime_limit_ms}};
  if (p.auto_converge_step) {
    params["cpu-throttle-initial"] = 1;
    params["max-cpu-throttle"] = 1;
  }
  if (p.migration_tls) {
    // Each guest carries these objects (agent/daemon/guest_process); the
    // source checks it reached the target host, the target admits only the
    // source host's certificate.
    params["tls-creds"] = migration_tls_out;
    params["tls-hostname"] = st.ctx.job.target;
  }
  if (p.multifd_channels > 0)
    params["multifd-channels"] = p.multifd_channels;
  if (p.postcopy_step)
    params["max-postcopy-bandwidth"] = p.max_postcopy_bandwidth;
  return params;
}

json::object target_parameters(const migration_policy& p) {
  json::object params;
  if (p.migration_tls) {
    params["tls-creds"] = migration_tls_in;
    params["tls-authz"] = migration_authz;
  }
  if (p.multifd_channels > 0)
    params["multifd-channels"] = p.multifd_channels;
  return params;
}

struct qmp_step {
  std::string command;
  json::object args;
  on_return then = [](const json::value&) {};
};

// Sends every step to the guest at once, without waiting between them: the
// host relays one guest's commands in the order they were sent, and its
// monitor runs them in turn, so each still sees the ones before it. `done`
// gets the first error ("" for none) once every step has answered.
void qmp_in_order(job_actor* self, const host_actor& host, const std::string& guest,
                  std::vector<qmp_step> steps, std::function<void(const std::string&)> done) {
  struct pending {
    size_t left;
    std::string error;
    std::function<void(const std::string&)> done;
  };
  auto p = std::make_shared<pending>(pending{steps.size(), {}, std::move(done)});
  const auto answered = [p](const std::string& why) {
    if (!why.empty() && p->error.empty())
      p->error = why;
    if (--p->left == 0)
      p->done(p->error);
  };
  for (auto& step : steps)
    qmp(
      self, host, guest, step.command, step.args,
      [answered, then = std::move(step.then)](const json::value& r) {
        then(r);
        answered({});
      },
      answered);
}

void side_ready(job_actor* self, const std::string& error);

// Whether the guest runs (a source that takes the guest back after a
// hand-over resumes it only if it ran), and what shapes its stream.
void configure_source(job_actor* self) {
  auto& st = self->state;
  std::vector<qmp_step> steps;
  steps.push_back({"query-status", {}, [self](const json::value& r) {
                     self->state.source_ran = status_of(r) != "paused";
                   }});
  steps.push_back({"migrate-set-capabilities", capabilities(st.ctx.policy, true)});
  steps.push_back({"migrate-set-parameters", source_parameters(st)});
  qmp_in_order(
    self, st.ctx.source, st.ctx.job.guest, std::move(steps),
    [self](const std::string& why) { side_ready(self, why.empty() ? why : "the source: " + why); });
}

// The created target: its events come to the job (as the source's do),
// then it is configured and listens.
void configure_target(job_actor* self, uint16_t port) {
  auto& st = self->state;
  const auto& guest = st.ctx.job.guest;
  st.uri = "tcp:" + st.ctx.target_address + ":" + std::to_string(port);
  const auto me = caf::actor_cast<caf::actor>(self);
  for (const auto* host : {&st.ctx.source, &st.ctx.target})
    self->request(*host, host_request_timeout, subscribe_atom::value, guest, me)
      .then([](bool) {}, [](const caf::error&) {}); // without events, the rounds still run
  std::vector<qmp_step> steps;
  steps.push_back({"migrate-set-capabilities", capabilities(st.ctx.policy, false)});
  steps.push_back({"migrate-set-parameters", target_parameters(st.ctx.policy)});
  steps.push_back({"migrate-incoming", {{"uri", st.uri}}});
  qmp_in_order(self, st.ctx.target, guest, std::move(steps), [self](const std::string& why) {
    side_ready(self, why.empty() ? why : "the target: " + why);
  });
}

} // namespace

// Both sides ready (or one failed): the migration starts, or the job ends.
void judge_sides(job_actor* self) {
  auto& st = self->state;
  if (!st.prepare_error.empty()) {
    fail(self, st.prepare_error);
    return;
  }
  if (st.cancel_requested) {
    end_unsucceeded(self, job_state::cancelled, "cancelled by request");
    return;
  }
  start_migration(self);
}

namespace {

// Both sides get ready at once: the source is asked and configured while the
// target guest is created and configured; `migrate` goes when both are. An
// error on either side is judged only then, so the job never settles while
// a target may still be coming into being. A staged job waits for go.
void side_ready(job_actor* self, const std::string& error) {
  auto& st = self->state;
  if (!error.empty() && st.prepare_error.empty())
    st.prepare_error = error;
  if (++st.sides_ready < 2 || st.finishing)
    return;
  if (!staging(st))
    judge_sides(self);
  else if (!st.prepare_error.empty())
    drop_stage(self, st.prepare_error);
}

void create_target(job_actor* self, const guest_spec& spec, bool may_clear);

// A target of this guest left on the target host by an earlier attempt at
// this move (prepared ahead before an orchestrator restart, say) blocks the
// create, and while this job runs the orphan sweeper leaves it alone as
// this job's. If its incoming migration never completed, the guest never
// ran there (the sweeper's own test): it goes, and the create runs again,
// once. Anything else fails the side with `why`.
void clear_leftover_target(job_actor* self, const guest_spec& spec, const std::string& why) {
  auto& st = self->state;
  self->request(st.ctx.target, host_request_timeout, list_atom::value)
    .then(
      [self, spec, why](const std::vector<guest_info>& on_target) {
        auto& st1 = self->state;
        const bool leftover =
          std::any_of(on_target.begin(), on_target.end(), [&](const guest_info& g) {
            return g.spec.name == st1.ctx.job.guest && g.spec.incoming;
          });
        if (!leftover || st1.finishing) {
          side_ready(self, why);
          return;
        }
        self
          ->request(st1.ctx.target, host_request_timeout, qmp_atom::value, st1.ctx.job.guest,
                    std::string{"query-migrate"}, std::string{})
          .then(
            [self, spec, why](const std::string& reply) {
              auto& st2 = self->state;
              json::value v;
              try {
                v = json::parse(reply);
              } catch (const std::exception&) {
              }
              const auto* r = v.is_object() ? v.as_object().if_contains("return") : nullptr;
              if (r == nullptr || status_of(*r, "none") == "completed" || st2.finishing) {
                side_ready(self, why);
                return;
              }
              log::warn("job {} ({}): removing the target left on {} by an earlier attempt",
                        st2.ctx.job.id, st2.ctx.job.guest, st2.ctx.job.target);
              self
                ->request(st2.ctx.target, host_request_timeout, destroy_atom::value,
                          st2.ctx.job.guest)
                .then([self, spec](bool) { create_target(self, spec, false); },
                      [self, why](const caf::error&) { side_ready(self, why); });
            },
            [self, why](const caf::error&) { side_ready(self, why); });
      },
      [self, why](const caf::error&) { side_ready(self, why); });
}

void create_target(job_actor* self, const guest_spec& spec, bool may_clear) {
  auto& st = self->state;
  self->request(st.ctx.target, create_request_timeout, create_atom::value, spec)
    .then(
      [self](const guest_info& info) {
        auto& st1 = self->state;
        st1.target_created = true;
        if (st1.finishing) {
          // Settled while it was being created (a host went down): the copy
          // never ran and never will.
          st1.target_created = false;
          self
            ->request(st1.ctx.target, host_request_timeout, destroy_atom::value, st1.ctx.job.guest)
            .then([](bool) {}, [](const caf::error&) {});
          return;
        }
        if (st1.cancel_requested || !st1.prepare_error.empty()) {
          side_ready(self, {}); // no use configuring it: judged with the source
          return;
        }
        configure_target(self, info.migration_port);
      },
      [self, spec, may_clear](const caf::error& err) {
        const std::string why = "creating the target guest: " + describe(err);
        if (may_clear)
          clear_leftover_target(self, spec, why);
        else
          side_ready(self, why);
      });
}

} // namespace

void prepare_target(job_actor* self, guest_spec spec) {
  auto& st = self->state;
  st.ctx.job.memory = spec.memory;
  if (!staging(st) && !move(self, job_state::preparing_target,
                            "create '" + spec.name + "' on " + st.ctx.job.target))
    return;
  st.preparing = true;
  spec.incoming = true;
  spec.mem_path.clear(); // the target's RAM is its own
  spec.migration_peer = st.ctx.job.source;
  configure_source(self);
  create_target(self, spec, true);
}

} // namespace ferry::job_detail
