#include "orchestrator/pair_state.hpp"

#include <gtest/gtest.h>

#include <set>

namespace ferry {
namespace {

// Every edge in the table, and nothing else, is allowed.
TEST(pair_state, walks_every_edge_and_refuses_every_other_pair) {
  std::set<std::pair<pair_state, pair_state>> edges;
  for (const auto& t : pair_transitions()) {
    EXPECT_TRUE(pair_can_move(t.from, t.to)) << to_string(t.from) << " -> " << to_string(t.to);
    EXPECT_NE(t.from, pair_state::ended) << "no edge leaves ended";
    edges.insert({t.from, t.to});
  }
  for (auto from : all_pair_states())
    for (auto to : all_pair_states())
      EXPECT_EQ(pair_can_move(from, to), edges.count({from, to}) == 1)
        << to_string(from) << " -> " << to_string(to);
}

TEST(pair_state, the_protection_cycle_and_its_ends) {
  std::set<pair_state> reached{pair_state::protecting};
  for (bool grew = true; grew;) {
    grew = false;
    for (const auto& t : pair_transitions())
      if (reached.count(t.from) != 0 && reached.insert(t.to).second)
        grew = true;
  }
  EXPECT_EQ(reached.size(), all_pair_states().size());
  // The cycle, in order.
  EXPECT_TRUE(pair_can_move(pair_state::protecting, pair_state::protected_));
  EXPECT_TRUE(pair_can_move(pair_state::protected_, pair_state::failing_over));
  EXPECT_TRUE(pair_can_move(pair_state::failing_over, pair_state::unprotected));
  EXPECT_TRUE(pair_can_move(pair_state::unprotected, pair_state::re_protecting));
  EXPECT_TRUE(pair_can_move(pair_state::re_protecting, pair_state::protected_));
  // A failover settles which copy runs before anything else happens.
  EXPECT_FALSE(pair_can_move(pair_state::failing_over, pair_state::ended));
  EXPECT_FALSE(pair_can_move(pair_state::failing_over, pair_state::protected_));
}

TEST(pair_state, names_round_trip) {
  for (auto s : all_pair_states())
    EXPECT_EQ(pair_state_from_string(to_string(s)), s);
  EXPECT_EQ(to_string(pair_state::re_protecting), "re-protecting");
  EXPECT_FALSE(pair_state_from_string("bogus"));
}

} // namespace
} // namespace ferry
