#pragma once
// The escalation ladder of one migration that keeps iterating (policy.hpp):
// which rung comes next and when, what has been tried, and the same read
// back from the journaled steps after an orchestrator restart. The job actor
// journals and performs each rung; this class only decides.

#include "orchestrator/policy.hpp"

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace ferry {

class escalation_ladder {
public:
  using clock_type = std::chrono::steady_clock;

  enum class rung { none, downtime_limit, auto_converge, dirty_limit, postcopy, cancel };

  struct step {
    rung what = rung::none;
    std::string kind; // the metric label: "downtime-limit", "auto-converge", ...
    std::string note; // the journal's text
  };

  explicit escalation_ladder(const migration_policy& p);

  // The journaled steps of this job (oldest first), before a restart: the
  // rungs they took still hold on the source guest.
  void restore(const std::vector<std::string>& steps, clock_type::time_point now);

  // The rung to take now, given the source's dirty-sync-count; rung::none
  // while the current one still has time. Once a rung is returned it counts
  // as taken.
  step next(uint64_t passes, clock_type::time_point now);

  // The agent refused the dirty limit (no KVM dirty ring): the ladder ends.
  step dirty_limit_refused(uint64_t passes, const std::string& why);
  // The job lifted the limit it set (the guest stays on its source).
  void dirty_limit_lifted() { dirty_limited_ = false; }

  // After the postcopy rung the ladder is over: the guest runs on the
  // target, nothing more is tried and nothing cancels.
  bool in_postcopy() const { return postcopy_; }
  uint64_t downtime_ms() const { return downtime_ms_; }
  bool dirty_limited() const { return dirty_limited_; }
  // What was tried, for the failure message: "downtime-limit 40 ms, ...".
  std::string tried() const;

  // The agent measures a limited vCPU's dirty rate once a second and
  // tightens its brake at most tenfold a time: a guest dirtying at memory
  // speed needs a few seconds to come down to a MiB/s quota, however fast
  // passes go by.
  static constexpr std::chrono::seconds dirty_limit_settle{5};

private:
  step cancel(uint64_t passes, const std::string& why);

  migration_policy policy_;
  uint64_t downtime_ms_;
  uint32_t downtime_steps_ = 0;
  bool throttle_released_ = false;
  bool dirty_limit_tried_ = false;
  bool dirty_limited_ = false;
  bool postcopy_ = false;
  std::string dirty_limit_refusal_;
  clock_type::time_point dirty_limit_since_;
  // After a restart the pass count at the last rung is not known: the first
  // look starts a fresh window.
  bool window_unknown_ = false;
  uint64_t passes_at_last_step_ = 0;
};

} // namespace ferry
