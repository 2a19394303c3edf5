#include "orchestrator/job_state.hpp"

#include <gtest/gtest.h>

#include <set>

namespace ferry {
namespace {

// Every edge in the table, and nothing else, is allowed.
TEST(job_state, walks_every_edge_and_refuses_every_other_pair) {
  std::set<std::pair<job_state, job_state>> edges;
  for (const auto& t : job_transitions()) {
    EXPECT_TRUE(job_can_move(t.from, t.to)) << to_string(t.from) << " -> " << to_string(t.to);
    EXPECT_FALSE(job_is_final(t.from)) << "no edge leaves a final state";
    edges.insert({t.from, t.to});
  }
  for (auto from : all_job_states())
    for (auto to : all_job_states())
      EXPECT_EQ(job_can_move(from, to), edges.count({from, to}) == 1)
        << to_string(from) << " -> " << to_string(to);
}

TEST(job_state, every_state_is_reachable_and_every_non_final_state_can_fail_or_cancel) {
  std::set<job_state> reached{job_state::pending};
  for (bool grew = true; grew;) {
    grew = false;
    for (const auto& t : job_transitions())
      if (reached.count(t.from) != 0 && reached.insert(t.to).second)
        grew = true;
  }
  EXPECT_EQ(reached.size(), all_job_states().size());
  for (auto s : all_job_states()) {
    if (job_is_final(s))
      continue;
    EXPECT_TRUE(job_can_move(s, job_state::failed) || job_can_move(s, job_state::cancelled))
      << to_string(s);
  }
  // The happy path, in order.
  EXPECT_TRUE(job_can_move(job_state::pending, job_state::scheduling));
  EXPECT_TRUE(job_can_move(job_state::scheduling, job_state::preparing_target));
  EXPECT_TRUE(job_can_move(job_state::preparing_target, job_state::running));
  EXPECT_TRUE(job_can_move(job_state::running, job_state::completing));
  EXPECT_TRUE(job_can_move(job_state::completing, job_state::succeeded));
  // Once the guest runs on the target, cancelling is no longer possible.
  EXPECT_FALSE(job_can_move(job_state::completing, job_state::cancelled));
}

TEST(job_state, names_round_trip) {
  for (auto s : all_job_states())
    EXPECT_EQ(job_state_from_string(to_string(s)), s);
  EXPECT_EQ(to_string(job_state::preparing_target), "preparing-target");
  EXPECT_FALSE(job_state_from_string("bogus"));
}

} // namespace
} // namespace ferry
