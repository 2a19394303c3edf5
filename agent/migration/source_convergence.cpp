// Making a guest that dirties too fast converge: QEMU's auto-converge rule
// (throttle steps) or, with the dirty-limit capability, the vCPU quota.
#include "agent/migration/source_engine.hpp"

namespace ferry {

namespace json = boost::json;

void migration_source::impl::maybe_throttle(uint64_t bytes_xfer, uint64_t bytes_dirty) {
  // QEMU's rule: the guest dirtied more than the threshold share of what
  // went over the link, twice in a row.
  const uint64_t threshold = bytes_xfer * plan.throttle_trigger_threshold / 100;
  if (bytes_dirty <= threshold || ++dirty_rate_high < 2)
    return;
  dirty_rate_high = 0;
  if (plan.dirty_limit) {
    // dirty-limit instead of auto-converge: every vCPU gets the quota, once
    // (again only if vcpu-dirty-limit changed), as QEMU does.
    const uint64_t quota = dirty_limit_quota;
    if (!dirty_limit_on || quota != dirty_limit_set) {
      plan.dirty_limit->set_period(dirty_limit_period_ms);
      plan.dirty_limit->set(std::nullopt, quota);
      dirty_limit_set = quota;
      dirty_limit_on = true;
    }
    return;
  }
  unsigned pct = plan.cpu_throttle_initial;
  if (throttle && throttle->percentage() > 0) {
    const unsigned now = throttle->percentage();
    unsigned inc = plan.cpu_throttle_increment;
    if (plan.cpu_throttle_tailslow) {
      // Just enough to bring dirtying down to the threshold, if that is less.
      const double cpu_now = 100.0 - now;
      const double cpu_ideal =
        cpu_now * static_cast<double>(threshold) / static_cast<double>(bytes_dirty);
      inc = std::min(inc, static_cast<unsigned>(cpu_now - cpu_ideal));
    }
    pct = now + inc;
  }
  pct = std::min(pct, plan.max_cpu_throttle);
  if (!throttle)
    throttle = std::make_unique<cpu_throttle>(g);
  throttle->set(pct);
  throttle_pct = pct;
}

} // namespace ferry
