// A migration job's plumbing: journaled transitions, QMP through a host
// actor, the job's end.
#include "orchestrator/job_actor.hpp"

#include "common/error.hpp"

namespace ferry::job_detail {

namespace {

std::string describe_reply_error(const json::object& err) {
  const auto* cls = err.if_contains("class");
  const auto* desc = err.if_contains("desc");
  std::string out = desc != nullptr && desc->is_string() ? std::string{desc->as_string()} : "?";
  if (cls != nullptr && cls->is_string())
    out += " (" + std::string{cls->as_string()} + ")";
  return out;
}

} // namespace

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
         const std::function<void(const std::string&)>& on_error) {
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

} // namespace ferry::job_detail
