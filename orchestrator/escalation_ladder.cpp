#include "orchestrator/escalation_ladder.hpp"

#include <cstdlib>

namespace ferry {

namespace {

bool starts_with(const std::string& s, const char* prefix) {
  return s.rfind(prefix, 0) == 0;
}

} // namespace

escalation_ladder::escalation_ladder(const migration_policy& p)
  : policy_(p), downtime_ms_(p.downtime_limit_ms) {}

void escalation_ladder::restore(const std::vector<std::string>& steps, clock_type::time_point now) {
  for (const auto& s : steps) {
    if (starts_with(s, "downtime-limit ")) {
      ++downtime_steps_;
      downtime_ms_ = std::strtoull(s.c_str() + 15, nullptr, 10);
    } else if (starts_with(s, "auto-converge")) {
      throttle_released_ = true;
    } else if (starts_with(s, "postcopy:")) {
      postcopy_ = true;
    } else if (starts_with(s, "dirty-limit")) {
      dirty_limit_tried_ = dirty_limited_ = true;
      dirty_limit_since_ = now;
    }
  }
  window_unknown_ = true;
}

escalation_ladder::step escalation_ladder::next(uint64_t passes, clock_type::time_point now) {
  if (postcopy_)
    return {};
  if (window_unknown_) {
    window_unknown_ = false;
    passes_at_last_step_ = passes;
  }
  if (passes < passes_at_last_step_ + policy_.escalate_after_passes)
    return {};
  if (dirty_limited_ && now - dirty_limit_since_ < dirty_limit_settle)
    return {};
  passes_at_last_step_ = passes;
  const std::string after = " after " + std::to_string(passes) + " passes";
  if (downtime_steps_ < policy_.downtime_steps) {
    ++downtime_steps_;
    downtime_ms_ *= 2;
    return {rung::downtime_limit, "downtime-limit",
            "downtime-limit " + std::to_string(downtime_ms_) + " ms" + after};
  }
  if (policy_.auto_converge_step && !throttle_released_) {
    throttle_released_ = true;
    return {rung::auto_converge, "auto-converge", "auto-converge throttle up to 99 %" + after};
  }
  if (policy_.dirty_limit_step && !dirty_limit_tried_) {
    dirty_limit_tried_ = dirty_limited_ = true;
    dirty_limit_since_ = now;
    return {rung::dirty_limit, "dirty-limit",
            "dirty-limit " + std::to_string(policy_.dirty_limit_mib_s) + " MiB/s per vCPU" + after};
  }
  if (policy_.postcopy_step) {
    postcopy_ = true;
    return {rung::postcopy, "postcopy", "postcopy: the guest moves now, its pages follow" + after};
  }
  return cancel(passes, "");
}

escalation_ladder::step escalation_ladder::dirty_limit_refused(uint64_t passes,
                                                               const std::string& why) {
  dirty_limited_ = false;
  dirty_limit_refusal_ = "refused: " + why;
  if (policy_.postcopy_step) {
    // Postcopy is still to come: the ladder goes on at the next window.
    passes_at_last_step_ = passes;
    return {};
  }
  return cancel(passes, dirty_limit_refusal_);
}

escalation_ladder::step escalation_ladder::cancel(uint64_t passes, const std::string& why) {
  return {rung::cancel, "cancel",
          "cancel: no convergence after " + std::to_string(passes) + " passes" +
            (why.empty() ? "" : "; dirty-limit " + why)};
}

std::string escalation_ladder::tried() const {
  std::string out = "downtime-limit " + std::to_string(downtime_ms_) + " ms";
  if (throttle_released_)
    out += ", auto-converge";
  if (dirty_limit_tried_) {
    out += ", dirty-limit " + std::to_string(policy_.dirty_limit_mib_s) + " MiB/s";
    if (!dirty_limit_refusal_.empty())
      out += " " + dirty_limit_refusal_;
  }
  if (postcopy_)
    out += ", postcopy";
  return out;
}

} // namespace ferry
