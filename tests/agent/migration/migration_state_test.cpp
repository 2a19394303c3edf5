// The MigrationStatus machine: every (side, state, event) triple is walked.
// Legal ones move to the state the oracle below names; every other one is
// refused. (That a refusal leaves the owner's state alone is the monitor's
// test: step() itself is a pure function.)

#include "agent/migration/migration_state.hpp"
#include "common/error.hpp"
#include "protocol/qapi_catalog.hpp"
#include "tests/support/transition_oracle.hpp"

#include <gtest/gtest.h>

#include <map>
#include <set>
#include <string>

using namespace ferry;
using ferry::test::edge_count;
using ferry::test::legal;

namespace {

// QEMU's transitions written as "from: event>to ..." per side — the oracle,
// kept in another form than the table under test.
const std::map<std::string, std::string> source_oracle = {
  {"none", "start>setup"},
  {"completed", "start>setup"},
  {"failed", "start>setup"},
  {"cancelled", "start>setup"},
  {"setup", "setup-done>active wait-unplug>wait-unplug cancel>cancelling fail>failed"},
  {"wait-unplug", "unplug-done>active cancel>cancelling fail>failed"},
  {"active", "pause-switchover>pre-switchover complete>completed start-postcopy>postcopy-active "
             "start-colo>colo cancel>cancelling fail>failed"},
  {"pre-switchover", "resume-switchover>device cancel>cancelling fail>failed"},
  {"device", "complete>completed start-postcopy>postcopy-active start-colo>colo "
             "cancel>cancelling fail>failed"},
  {"postcopy-active", "complete>completed postcopy-broken>postcopy-paused cancel>cancelling "
                      "fail>failed"},
  {"postcopy-paused", "recover>postcopy-recover cancel>cancelling fail>failed"},
  {"postcopy-recover", "recovered>postcopy-active recover-failed>postcopy-paused "
                       "cancel>cancelling fail>failed"},
  {"colo", "colo-failover>completed fail>failed"},
  {"cancelling", "cancel-done>cancelled"},
};

const std::map<std::string, std::string> destination_oracle = {
  {"none", "start>setup"},
  {"setup", "setup-done>active fail>failed"},
  {"active", "complete>completed start-postcopy>postcopy-active start-colo>colo fail>failed"},
  {"postcopy-active", "complete>completed postcopy-broken>postcopy-paused fail>failed"},
  {"postcopy-paused", "recover>postcopy-recover"},
  {"postcopy-recover", "recovered>postcopy-active recover-failed>postcopy-paused fail>failed"},
  {"colo", "colo-failover>completed fail>failed"},
};

// "event>to" words of the oracle for `from`, as a map event -> to.

void walk(migration_side side, const std::map<std::string, std::string>& oracle) {
  size_t legal_edges = 0;
  for (size_t s = 0; s < migration_status_count; ++s) {
    const auto from = static_cast<migration_status>(s);
    const auto allowed = legal(oracle, std::string{to_string(from)});
    for (size_t e = 0; e < migration_event_count; ++e) {
      const auto on = static_cast<migration_event>(e);
      const auto next = step(side, from, on);
      const auto want = allowed.find(std::string{to_string(on)});
      if (want != allowed.end()) {
        ASSERT_TRUE(next) << to_string(from) << " --" << to_string(on) << "-->";
        EXPECT_EQ(to_string(*next), want->second) << to_string(from) << " --" << to_string(on);
        ++legal_edges;
      } else {
        ASSERT_FALSE(next) << to_string(from) << " --" << to_string(on) << "--> "
                           << to_string(*next) << " is not a QEMU transition";
        EXPECT_EQ(next.error(), errc::bad_run_state);
      }
    }
  }
  EXPECT_EQ(legal_edges, edge_count(oracle)) << "every oracle edge exists";
}

} // namespace

TEST(migration_state, source_walks_every_edge) {
  walk(migration_side::source, source_oracle);
}

TEST(migration_state, destination_walks_every_edge) {
  walk(migration_side::destination, destination_oracle);
}

TEST(migration_state, names_are_the_schema_s) {
  const auto schema = qapi::catalog::migration().enum_values("MigrationStatus");
  ASSERT_EQ(schema.size(), migration_status_count);
  for (size_t i = 0; i < schema.size(); ++i)
    EXPECT_EQ(to_string(static_cast<migration_status>(i)), schema[i]);
}

TEST(migration_state, running_states_are_qemus) {
  std::set<std::string> running;
  for (size_t s = 0; s < migration_status_count; ++s)
    if (migration_running(static_cast<migration_status>(s)))
      running.insert(std::string{to_string(static_cast<migration_status>(s))});
  EXPECT_EQ(running, (std::set<std::string>{"setup", "wait-unplug", "active", "pre-switchover",
                                            "device", "postcopy-active", "postcopy-paused",
                                            "postcopy-recover", "cancelling"}));
  // Exactly the source states from which a cancel is accepted, plus cancelling.
  for (size_t s = 0; s < migration_status_count; ++s) {
    const auto st = static_cast<migration_status>(s);
    if (st == migration_status::cancelling)
      continue;
    EXPECT_EQ(migration_running(st),
              static_cast<bool>(step(migration_side::source, st, migration_event::cancel)))
      << to_string(st);
  }
}
