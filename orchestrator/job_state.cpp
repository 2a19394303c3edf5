#include "orchestrator/job_state.hpp"

#include <algorithm>
#include <array>

namespace ferry {

namespace {

using js = job_state;

constexpr std::array<std::string_view, 8> names{"pending", "scheduling", "preparing-target",
                                                "running", "completing", "succeeded",
                                                "failed",  "cancelled"};

} // namespace

const std::vector<job_transition>& job_transitions() {
  // Completing may still fail (the target does not run): the source is then
  // still there and keeps running. A journal replay after a restart may find
  // a job back at pending (a retry on another host after a failure is a new job).
  static const std::vector<job_transition> table{
    {js::pending, js::scheduling},
    {js::pending, js::cancelled},
    {js::scheduling, js::preparing_target},
    {js::scheduling, js::pending},
    {js::scheduling, js::failed},
    {js::scheduling, js::cancelled},
    {js::preparing_target, js::running},
    {js::preparing_target, js::failed},
    {js::preparing_target, js::cancelled},
    {js::running, js::completing},
    {js::running, js::failed},
    {js::running, js::cancelled},
    {js::completing, js::succeeded},
    {js::completing, js::failed},
  };
  return table;
}

bool job_can_move(job_state from, job_state to) {
  const auto& t = job_transitions();
  return std::any_of(t.begin(), t.end(),
                     [&](const job_transition& e) { return e.from == from && e.to == to; });
}

bool job_is_final(job_state s) {
  return s == js::succeeded || s == js::failed || s == js::cancelled;
}

std::string_view to_string(job_state s) {
  return names.at(static_cast<size_t>(s));
}

std::optional<job_state> job_state_from_string(std::string_view s) {
  for (size_t i = 0; i < names.size(); ++i)
    if (names[i] == s)
      return static_cast<job_state>(i);
  return std::nullopt;
}

const std::vector<job_state>& all_job_states() {
  static const std::vector<job_state> all{js::pending, js::scheduling, js::preparing_target,
                                          js::running, js::completing, js::succeeded,
                                          js::failed,  js::cancelled};
  return all;
}

} // namespace ferry
