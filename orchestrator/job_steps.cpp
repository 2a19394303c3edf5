// A migration job's plumbing: journaled transitions, QMP through a host
// actor, the job's end.
#include "orchestrator/job_actor.hpp"

#include "common/error.hpp"
#include "common/log.hpp"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <optional>
#include <thread>
#include <utility>

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

bool lists_guest(const std::vector<guest_info>& guests, const std::string& name) {
  return std::any_of(guests.begin(), guests.end(),
                     [&](const guest_info& g) { return g.spec.name == name; });
}

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
  if (to != job_state::running) // that one waits for the migrate command
    fault_point(job, to);
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

std::string status_of(const json::value& r, const std::string& absent) {
  const auto* s = r.is_object() ? r.as_object().if_contains("status") : nullptr;
  return s != nullptr && s->is_string() ? std::string{s->as_string()} : absent;
}

// Tests only: FERRY_FAULT_HOLD=STATE:MS parks every job for MS ms right
// after it entered STATE (journaled), saying so on stderr, so that a test
// can kill or cut something at exactly that point of the hand-over.
void fault_point(const job_record& job, job_state to) {
  static const auto hold = []() -> std::optional<std::pair<job_state, int>> {
    const char* env = std::getenv("FERRY_FAULT_HOLD");
    if (env == nullptr)
      return std::nullopt;
    const std::string text{env};
    const auto colon = text.find(':');
    auto state = job_state_from_string(text.substr(0, colon));
    if (!state || colon == std::string::npos)
      return std::nullopt;
    return std::make_pair(*state, std::atoi(text.c_str() + colon + 1));
  }();
  if (!hold || hold->first != to)
    return;
  log::warn("fault point: job {} ({}) entered {}; holding {} ms", job.id, job.guest, to_string(to),
            hold->second);
  // Blocking on purpose (test-only): nothing of this job may move meanwhile.
  std::this_thread::sleep_for(std::chrono::milliseconds(hold->second));
}

} // namespace ferry::job_detail
