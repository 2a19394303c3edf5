#pragma once
// How long a move should take, to order an evacuation: the guest's memory
// over what the link gains on its dirtying (the bandwidth measured on this
// cluster's finished migrations, the dirty rate from a calc-dirty-rate
// pre-flight), and the order the queue starts moves in.

#include <cstdint>
#include <optional>

namespace ferry {

// Seconds to move `memory` bytes at `bandwidth` bytes/s while the guest
// dirties `dirty_rate` bytes/s. A guest dirtying at or above the link rate
// counts as ten times its size (it converges only with help: the ladder).
double estimated_seconds(uint64_t memory, double dirty_rate, double bandwidth);

// Bandwidth to plan with: the measured one when there is one, else the
// policy's max-bandwidth, else (unlimited) 1 GiB/s.
double planning_bandwidth(double measured, uint64_t policy_max_bandwidth);

// Folds one finished migration's average rate into the measured bandwidth
// (exponential average, recent migrations weigh most).
double update_measured_bandwidth(double measured, double observed);

struct queued_move {
  int64_t id = 0;
  bool resume = false;   // unfinished at the orchestrator's start: first
  int32_t priority = 0;  // higher first
  bool ready = false;    // then one prepared ahead (prepare_ahead): it starts at once
  double estimate_s = 0; // then shorter first
};

// The order the scheduler starts moves in.
bool starts_before(const queued_move& a, const queued_move& b);

} // namespace ferry
