#pragma once
// The base of the actor tests that run under CAF's test coordinator: an
// actor system whose scheduler the test drives (run, trigger_timeouts), the
// control plane's message types, and a real journal in a temporary folder.

#include "actors/host_interface.hpp"
#include "orchestrator/journal.hpp"
#include "tests/support/temp_dir.hpp"

#include <caf/all.hpp>
#include <caf/scheduler/test_coordinator.hpp>

#include <gtest/gtest.h>

#include <memory>

namespace ferry::test {

struct coordinated_fixture : ::testing::Test {
  caf::actor_system_config cfg;
  std::unique_ptr<caf::actor_system> sys;
  caf::scheduler::test_coordinator* sched = nullptr;
  temp_dir tmp;
  std::shared_ptr<journal> log;

  void SetUp() override {
    cfg.set("scheduler.policy", caf::atom("testing"));
    cfg.set("logger.file-verbosity", caf::atom("quiet"));
    add_control_plane_types(cfg);
    sys = std::make_unique<caf::actor_system>(cfg);
    sched = &dynamic_cast<caf::scheduler::test_coordinator&>(sys->scheduler());
    auto j = journal::open(tmp.path() + "/journal.db");
    ASSERT_TRUE(j);
    log = std::move(*j);
  }

  // One round of every pending timeout (polls, refreshes, pre-flights).
  void tick(size_t rounds = 1) {
    for (size_t i = 0; i < rounds; ++i) {
      sched->trigger_timeouts();
      sched->run();
    }
  }
};

} // namespace ferry::test
