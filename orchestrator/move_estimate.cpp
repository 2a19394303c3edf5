#include "orchestrator/move_estimate.hpp"

namespace ferry {

double estimated_seconds(uint64_t memory, double dirty_rate, double bandwidth) {
  const double bytes = static_cast<double>(memory);
  if (bandwidth <= 0)
    return 0;
  if (dirty_rate >= bandwidth)
    return 10 * bytes / bandwidth;
  // The first pass sends the memory; each later pass what was dirtied during
  // the previous one: a geometric series with ratio dirty/bandwidth.
  return bytes / (bandwidth - dirty_rate);
}

double planning_bandwidth(double measured, uint64_t policy_max_bandwidth) {
  if (measured > 0)
    return measured;
  if (policy_max_bandwidth > 0)
    return static_cast<double>(policy_max_bandwidth);
  return 1024.0 * 1024 * 1024;
}

double update_measured_bandwidth(double measured, double observed) {
  if (observed <= 0)
    return measured;
  return measured <= 0 ? observed : 0.7 * measured + 0.3 * observed;
}

bool starts_before(const queued_move& a, const queued_move& b) {
  if (a.resume != b.resume)
    return a.resume;
  if (a.priority != b.priority)
    return a.priority > b.priority;
  if (a.ready != b.ready)
    return a.ready;
  if (a.estimate_s != b.estimate_s)
    return a.estimate_s < b.estimate_s;
  return a.id < b.id;
}

} // namespace ferry
