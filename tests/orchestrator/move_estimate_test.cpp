// Evacuation order: priority, then the estimated duration from size, the
// pre-flight's dirty rate and the measured bandwidth.

#include "orchestrator/move_estimate.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <vector>

namespace ferry {
namespace {

constexpr double mib = 1024.0 * 1024;
constexpr uint64_t hundred_mib = uint64_t{100} << 20;

TEST(move_estimate, dirtying_slows_a_move_down) {
  EXPECT_DOUBLE_EQ(estimated_seconds(hundred_mib, 0, 10 * mib), 10);
  EXPECT_DOUBLE_EQ(estimated_seconds(hundred_mib, 5 * mib, 10 * mib), 20);
  EXPECT_DOUBLE_EQ(estimated_seconds(hundred_mib, 10 * mib, 10 * mib), 100)
    << "dirtying as fast as the link: ten times its size";
}

TEST(move_estimate, planning_bandwidth_prefers_what_was_measured) {
  EXPECT_DOUBLE_EQ(planning_bandwidth(0, 0), 1024 * mib);
  EXPECT_DOUBLE_EQ(planning_bandwidth(0, uint64_t{128} << 20), 128 * mib);
  EXPECT_DOUBLE_EQ(planning_bandwidth(50 * mib, uint64_t{128} << 20), 50 * mib);
  EXPECT_DOUBLE_EQ(update_measured_bandwidth(0, 40), 40);
  EXPECT_DOUBLE_EQ(update_measured_bandwidth(40, 80), 52);
  EXPECT_DOUBLE_EQ(update_measured_bandwidth(40, 0), 40) << "no figure, no change";
}

TEST(move_estimate, order_is_resumed_then_priority_then_prepared_then_quickest) {
  std::vector<queued_move> q{{1, false, 0, false, 30}, {2, false, 5, false, 90},
                             {3, false, 0, false, 10}, {4, true, 0, false, 99},
                             {5, false, 0, false, 10}, {6, false, 5, false, 20},
                             {7, false, 0, true, 50},  {8, false, 5, true, 95}};
  std::sort(q.begin(), q.end(), starts_before);
  std::vector<int64_t> ids;
  ids.reserve(q.size());
  for (const auto& m : q)
    ids.push_back(m.id);
  // A move prepared ahead goes before quicker ones of its priority, never
  // before a higher priority.
  EXPECT_EQ(ids, (std::vector<int64_t>{4, 8, 6, 2, 7, 3, 5, 1}));
}

} // namespace
} // namespace ferry
