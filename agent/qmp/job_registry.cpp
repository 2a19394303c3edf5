#include "agent/qmp/job_registry.hpp"

#include "common/error.hpp"
#include "common/thread_name.hpp"
#include "protocol/qmp_wire.hpp"

#include <boost/json.hpp>

#include <array>
#include <cctype>

namespace ferry {

namespace json = boost::json;

namespace {

constexpr std::array<std::string_view, job_status_count> names = {
  "undefined", "created", "running", "waiting", "pending", "aborting", "concluded", "null"};

// QEMU's JobSTT for the states a job that finalizes on its own passes.
using js = job_status;
constexpr std::array<std::pair<js, js>, 11> edges = {{
  {js::undefined, js::created},
  {js::created, js::running},
  {js::created, js::aborting},
  {js::running, js::waiting},
  {js::running, js::aborting},
  {js::waiting, js::pending},
  {js::waiting, js::aborting},
  {js::pending, js::concluded},
  {js::pending, js::aborting},
  {js::aborting, js::concluded},
  {js::concluded, js::null},
}};

} // namespace

std::string_view to_string(job_status s) {
  return names.at(static_cast<size_t>(s));
}

bool job_transition_allowed(job_status from, job_status to) {
  for (const auto& [f, t] : edges)
    if (f == from && t == to)
      return true;
  return false;
}

job_registry::job_registry(std::function<void(std::string)> emit) : emit_(std::move(emit)) {}

job_registry::~job_registry() {
  for (auto& j : jobs_)
    if (j.thread.joinable())
      j.thread.join();
}

std::optional<std::string> job_registry::id_refusal(const std::string& id) const {
  // QEMU's id_wellformed: a letter, then letters, digits, '-', '.', '_'.
  bool ok = !id.empty() && std::isalpha(static_cast<unsigned char>(id[0])) != 0;
  for (char c : id)
    ok =
      ok && (std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '-' || c == '.' || c == '_');
  if (!ok)
    return "Invalid job ID '" + id + "'";
  std::lock_guard lk{mtx_};
  for (const auto& j : jobs_)
    if (j.id == id)
      return "Job ID '" + id + "' already in use";
  return std::nullopt;
}

void job_registry::move(job& j, job_status to) {
  if (!job_transition_allowed(j.status, to))
    return; // a table bug: never reached (the test walks every edge)
  j.status = to;
  emit_(qmp::event("JOB_STATUS_CHANGE", json::object{{"status", to_string(to)}, {"id", j.id}}));
}

std::optional<std::string> job_registry::start(const std::string& id, std::string type,
                                               std::function<caf::expected<void>()> work) {
  if (auto why = id_refusal(id))
    return why;
  std::lock_guard lk{mtx_};
  auto& j = jobs_.emplace_back();
  j.id = id;
  j.type = std::move(type);
  move(j, job_status::created);
  j.thread = std::thread{[this, &j, work = std::move(work)] { run(j, work); }};
  return std::nullopt;
}

void job_registry::run(job& j, const std::function<caf::expected<void>()>& work) {
  name_this_thread("qmp-job");
  {
    std::lock_guard lk{mtx_};
    move(j, job_status::running);
  }
  auto ok = work();
  std::lock_guard lk{mtx_};
  if (ok) {
    move(j, job_status::waiting);
    move(j, job_status::pending);
  } else {
    j.error = describe(ok.error());
    move(j, job_status::aborting);
  }
  move(j, job_status::concluded);
  j.done = true;
}

json::array job_registry::query() const {
  std::lock_guard lk{mtx_};
  json::array out;
  for (const auto& j : jobs_) {
    json::object o{{"id", j.id},
                   {"type", j.type},
                   {"status", to_string(j.status)},
                   {"current-progress", j.done ? 1 : 0},
                   {"total-progress", 1}};
    if (!j.error.empty())
      o["error"] = j.error;
    out.push_back(std::move(o));
  }
  return out;
}

std::optional<std::string> job_registry::dismiss(const std::string& id) {
  std::thread finished;
  {
    std::lock_guard lk{mtx_};
    auto it = jobs_.begin();
    while (it != jobs_.end() && it->id != id)
      ++it;
    if (it == jobs_.end())
      return "Job not found";
    if (it->status != job_status::concluded)
      return "Job '" + id + "' in state '" + std::string{to_string(it->status)} +
             "' cannot accept command verb 'dismiss'";
    move(*it, job_status::null);
    finished = std::move(it->thread);
    jobs_.erase(it);
  }
  if (finished.joinable())
    finished.join(); // it has concluded: returning, if not gone
  return std::nullopt;
}

} // namespace ferry
