// The escalation ladder's decisions: every rung in order at its pace, rungs
// the policy leaves out skipped, the dirty limit given time to act, a refusal
// ending the ladder, and the state read back from journaled steps.

#include "orchestrator/escalation_ladder.hpp"

#include <gtest/gtest.h>

namespace ferry {
namespace {

using rung = escalation_ladder::rung;
using namespace std::chrono_literals;

migration_policy policy() {
  migration_policy p;
  p.escalate_after_passes = 3;
  p.downtime_limit_ms = 100;
  p.downtime_steps = 2;
  p.dirty_limit_mib_s = 4;
  return p;
}

TEST(escalation_ladder, climbs_every_rung_in_order_every_n_passes) {
  escalation_ladder l{policy()};
  const auto t0 = escalation_ladder::clock_type::now();
  EXPECT_EQ(l.next(2, t0).what, rung::none);
  auto s = l.next(3, t0);
  EXPECT_EQ(s.what, rung::downtime_limit);
  EXPECT_EQ(s.kind, "downtime-limit");
  EXPECT_EQ(s.note, "downtime-limit 200 ms after 3 passes");
  EXPECT_EQ(l.downtime_ms(), 200U);
  EXPECT_EQ(l.next(5, t0).what, rung::none);
  EXPECT_EQ(l.next(6, t0).note, "downtime-limit 400 ms after 6 passes");
  s = l.next(9, t0);
  EXPECT_EQ(s.what, rung::auto_converge);
  EXPECT_EQ(s.note, "auto-converge throttle up to 99 % after 9 passes");
  s = l.next(12, t0);
  EXPECT_EQ(s.what, rung::dirty_limit);
  EXPECT_EQ(s.note, "dirty-limit 4 MiB/s per vCPU after 12 passes");
  EXPECT_TRUE(l.dirty_limited());
  // The brake needs seconds, not passes.
  EXPECT_EQ(l.next(15, t0 + 1s).what, rung::none);
  EXPECT_EQ(l.next(40, t0 + 4s).what, rung::none);
  s = l.next(41, t0 + escalation_ladder::dirty_limit_settle);
  EXPECT_EQ(s.what, rung::cancel);
  EXPECT_EQ(s.note, "cancel: no convergence after 41 passes");
  EXPECT_EQ(l.tried(), "downtime-limit 400 ms, auto-converge, dirty-limit 4 MiB/s");
}

TEST(escalation_ladder, rungs_the_policy_leaves_out_are_skipped) {
  auto p = policy();
  p.downtime_steps = 0;
  p.auto_converge_step = false;
  p.dirty_limit_step = false;
  escalation_ladder l{p};
  const auto t0 = escalation_ladder::clock_type::now();
  EXPECT_EQ(l.next(3, t0).what, rung::cancel);
  EXPECT_EQ(l.tried(), "downtime-limit 100 ms");

  p.dirty_limit_step = true;
  escalation_ladder only_limit{p};
  EXPECT_EQ(only_limit.next(3, t0).what, rung::dirty_limit);
}

TEST(escalation_ladder, a_refused_dirty_limit_ends_the_ladder) {
  auto p = policy();
  p.downtime_steps = 0;
  p.auto_converge_step = false;
  escalation_ladder l{p};
  const auto t0 = escalation_ladder::clock_type::now();
  ASSERT_EQ(l.next(3, t0).what, rung::dirty_limit);
  auto s = l.dirty_limit_refused(4, "no dirty ring");
  EXPECT_EQ(s.what, rung::cancel);
  EXPECT_EQ(s.note, "cancel: no convergence after 4 passes; dirty-limit refused: no dirty ring");
  EXPECT_FALSE(l.dirty_limited()) << "nothing to lift";
  EXPECT_EQ(l.tried(), "downtime-limit 100 ms, dirty-limit 4 MiB/s refused: no dirty ring");
}

// Postcopy, where policy allows it: the last rung before cancel; after it
// nothing more is tried and nothing cancels (the guest runs on the target).
TEST(escalation_ladder, postcopy_comes_last_and_ends_the_ladder_without_a_cancel) {
  auto p = policy();
  p.downtime_steps = 1;
  p.auto_converge_step = false;
  p.postcopy_step = true;
  escalation_ladder l{p};
  const auto t0 = escalation_ladder::clock_type::now();
  ASSERT_EQ(l.next(3, t0).what, rung::downtime_limit);
  ASSERT_EQ(l.next(6, t0).what, rung::dirty_limit);
  EXPECT_FALSE(l.in_postcopy());
  auto s = l.next(9, t0 + escalation_ladder::dirty_limit_settle);
  EXPECT_EQ(s.what, rung::postcopy);
  EXPECT_EQ(s.kind, "postcopy");
  EXPECT_EQ(s.note, "postcopy: the guest moves now, its pages follow after 9 passes");
  EXPECT_TRUE(l.in_postcopy());
  for (uint64_t passes : {12, 100, 1000})
    EXPECT_EQ(l.next(passes, t0 + 1h).what, rung::none) << passes;
  EXPECT_EQ(l.tried(), "downtime-limit 200 ms, dirty-limit 4 MiB/s, postcopy");

  // A refused dirty limit does not cancel: postcopy is still to come, at the
  // next window.
  p.downtime_steps = 0;
  escalation_ladder refused{p};
  ASSERT_EQ(refused.next(3, t0).what, rung::dirty_limit);
  EXPECT_EQ(refused.dirty_limit_refused(4, "no dirty ring").what, rung::none);
  EXPECT_EQ(refused.next(6, t0).what, rung::none);
  EXPECT_EQ(refused.next(7, t0).what, rung::postcopy);

  // Restored after a restart: still in postcopy.
  escalation_ladder restored{p};
  restored.restore({"dirty-limit 4 MiB/s per vCPU after 3 passes",
                    "postcopy: the guest moves now, its pages follow after 6 passes",
                    "postcopy-recover attempt 1 on tcp:10.0.0.2:4444"},
                   t0);
  EXPECT_TRUE(restored.in_postcopy());
  EXPECT_EQ(restored.next(100, t0 + 1h).what, rung::none);
}

TEST(escalation_ladder, restored_from_journaled_steps_it_carries_on_where_it_was) {
  escalation_ladder l{policy()};
  const auto t0 = escalation_ladder::clock_type::now();
  l.restore({"downtime-limit 200 ms after 3 passes", "downtime-limit 400 ms after 6 passes",
             "auto-converge throttle up to 99 % after 9 passes"},
            t0);
  EXPECT_EQ(l.downtime_ms(), 400U);
  EXPECT_FALSE(l.dirty_limited());
  // The pass count at the last rung died with the old orchestrator: the
  // first look opens a new window.
  EXPECT_EQ(l.next(50, t0).what, rung::none);
  EXPECT_EQ(l.next(52, t0).what, rung::none);
  EXPECT_EQ(l.next(53, t0).what, rung::dirty_limit);

  escalation_ladder limited{policy()};
  limited.restore({"downtime-limit 200 ms after 3 passes", "downtime-limit 400 ms after 6 passes",
                   "auto-converge throttle up to 99 % after 9 passes",
                   "dirty-limit 4 MiB/s per vCPU after 12 passes"},
                  t0);
  EXPECT_TRUE(limited.dirty_limited()) << "a failed move must still lift it";
  EXPECT_EQ(limited.next(20, t0).what, rung::none);
  EXPECT_EQ(limited.next(23, t0 + escalation_ladder::dirty_limit_settle).what, rung::cancel);
  limited.dirty_limit_lifted();
  EXPECT_FALSE(limited.dirty_limited());
}

} // namespace
} // namespace ferry
