// Both engines' phase machines: every (phase, event) pair is walked against
// an oracle written in another form; legal pairs advance to the oracle's
// phase, every other one is refused with bad_run_state.

#include "agent/migration/engine_phase.hpp"
#include "common/error.hpp"
#include "tests/support/transition_oracle.hpp"

#include <gtest/gtest.h>

#include <map>
#include <string>

using namespace ferry;
using ferry::test::edge_count;
using ferry::test::legal;

namespace {

const std::map<std::string, std::string> source_oracle = {
  {"connect", "connected>setup error>failed cancel>cancelled"},
  {"setup", "setup-done>iterate error>failed cancel>cancelled"},
  {"iterate", "pass-again>iterate pass-converged>switchover postcopy-requested>postcopy-switch "
              "error>failed cancel>cancelled"},
  {"switchover", "dirty-sent>device-state error>failed cancel>cancelled"},
  {"device-state", "state-sent>handover error>failed cancel>cancelled"},
  {"handover", "destination-ready>done colo-started>colo error>failed cancel>cancelled"},
  {"colo", "colo-ended>done error>failed cancel>cancelled"},
  {"postcopy-switch",
   "destination-running>postcopy link-lost>postcopy-paused error>failed cancel>cancelled"},
  {"postcopy", "postcopy-done>done link-lost>postcopy-paused error>failed cancel>cancelled"},
  {"postcopy-paused", "resume>postcopy-recover error>failed cancel>cancelled"},
  {"postcopy-recover", "recovered>postcopy link-lost>postcopy-paused error>failed "
                       "cancel>cancelled"},
};

const std::map<std::string, std::string> destination_oracle = {
  {"listen", "accepted>handshake error>failed cancel>failed"},
  {"handshake", "agreed>channels error>failed cancel>failed"},
  {"channels", "channels-up>receive error>failed cancel>failed"},
  {"receive", "stream-ended>load-state postcopy-switch>postcopy-load error>failed cancel>failed"},
  {"load-state", "state-loaded>handover colo-started>colo error>failed cancel>failed"},
  {"colo", "colo-ended>done error>failed cancel>failed"},
  {"handover", "go>done error>failed cancel>failed"},
  {"postcopy-load", "go>postcopy error>failed cancel>failed"},
  {"postcopy", "postcopy-done>done link-lost>postcopy-paused error>failed cancel>failed"},
  {"postcopy-paused", "recover>postcopy-recover error>failed cancel>failed"},
  {"postcopy-recover", "recovered>postcopy link-lost>postcopy-paused error>failed cancel>failed"},
};

template <class Phase, class Event>
void walk(size_t phases, size_t events, const std::map<std::string, std::string>& oracle) {
  size_t legal_edges = 0;
  for (size_t p = 0; p < phases; ++p) {
    const auto from = static_cast<Phase>(p);
    const auto allowed = legal(oracle, std::string{to_string(from)});
    for (size_t e = 0; e < events; ++e) {
      const auto on = static_cast<Event>(e);
      const auto next = step(from, on);
      const auto want = allowed.find(std::string{to_string(on)});
      if (want != allowed.end()) {
        ASSERT_TRUE(next) << to_string(from) << " --" << to_string(on) << "-->";
        EXPECT_EQ(to_string(*next), want->second) << to_string(from) << " --" << to_string(on);
        ++legal_edges;
      } else {
        ASSERT_FALSE(next) << to_string(from) << " --" << to_string(on) << "--> "
                           << to_string(*next);
        EXPECT_EQ(next.error(), errc::bad_run_state);
        EXPECT_NE(describe(next.error()).find(std::string{to_string(from)}), std::string::npos);
      }
    }
  }
  EXPECT_EQ(legal_edges, edge_count(oracle)) << "every oracle edge exists";
}

} // namespace

TEST(engine_phase, source_walks_every_pair) {
  walk<source_phase, source_event>(source_phase_count, source_event_count, source_oracle);
}

TEST(engine_phase, destination_walks_every_pair) {
  walk<destination_phase, destination_event>(destination_phase_count, destination_event_count,
                                             destination_oracle);
}

TEST(engine_phase, terminal_phases_take_no_event) {
  for (auto p : {source_phase::done, source_phase::failed, source_phase::cancelled})
    EXPECT_TRUE(terminal(p)) << to_string(p);
  for (auto p : {destination_phase::done, destination_phase::failed})
    EXPECT_TRUE(terminal(p)) << to_string(p);
  EXPECT_FALSE(terminal(source_phase::iterate));
  EXPECT_FALSE(terminal(destination_phase::receive));
}
