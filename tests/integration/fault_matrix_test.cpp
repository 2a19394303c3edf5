// The fault matrix (issue 15): a migration of a running guest parked at each
// state of its job — preparing-target, running, completing — through the
// orchestrator's test-only fault point (FERRY_FAULT_HOLD), and there hit
// by one fault: the source agent killed, the destination agent killed, the
// orchestrator killed (each then started again), the migration
// connections reset, the migration network silently dropping everything
// for a while. Whatever the job then decides, at the end exactly one copy
// of the guest runs, and its memory verifies page by page.

#include "tests/support/cluster_fixture.hpp"
#include "tests/support/process.hpp"
#include "tests/support/test_cluster.hpp"
#include "tools/qmp/qmp_client.hpp"

#include <boost/json.hpp>
#include <gtest/gtest.h>

#include <signal.h>

#include <string>
#include <thread>
#include <vector>

namespace ferry::test {
namespace {

namespace json = boost::json;
using namespace std::chrono_literals;

enum class fault {
  source_agent_killed,
  target_agent_killed,
  orchestrator_killed,
  link_reset,
  link_silent
};

struct fault_cell {
  const char* state; // where the job is parked
  fault what;
};

std::string name_of(const fault_cell& c) {
  static const char* names[] = {"source_agent_killed", "target_agent_killed", "orchestrator_killed",
                                "link_reset", "link_silent"};
  std::string n = std::string{c.state} + "_" + names[static_cast<int>(c.what)];
  for (auto& ch : n)
    if (ch == '-')
      ch = '_';
  return n;
}

class fault_matrix : public cluster, public ::testing::WithParamInterface<fault_cell> {
protected:
  void SetUp() override {
    auto img = run({binary("tools/ferry-testguest"), "image", image(), "--ram-top", "8M",
                    "--ws-pages", "128", "--report-every", "50"});
    ASSERT_EQ(img.status, 0) << img.output;
    c.orchestrator_env = {"FERRY_FAULT_HOLD=" + std::string{GetParam().state} + ":2500"};
    // A silent link is given up on within 3 s here (10 s by default).
    c.agent_env = {"FERRY_MIGRATION_LINK_TIMEOUT_MS=3000"};
    // 8 MiB at 2 MiB/s: precopy still runs while the job is parked at
    // running; the working set (512 KiB) fits the downtime limit.
    auto err = c.start(host_names, "max_bandwidth = 2097152\ndowntime_limit_ms = 1000\n");
    ASSERT_TRUE(err.empty()) << err;
  }

  bool parked() {
    return c.orchestrator->stderr_text().find("fault point: job 1") != std::string::npos;
  }

  // Whether the job has ended (any final state).
  std::string job_state() {
    const auto mv = json::parse(ctl({"migrations", "-o", "json"}).output);
    return mv.as_array().empty() ? "" : std::string{mv.as_array()[0].at("state").as_string()};
  }
};

TEST_P(fault_matrix, exactly_one_copy_runs_and_verifies) {
  const auto cell = GetParam();
  const bool link_fault = cell.what == fault::link_reset || cell.what == fault::link_silent;
  if (link_fault && !c.in_namespaces())
    GTEST_SKIP() << "link faults need network namespaces (root and iproute2)";
  create("vm1", "host-a");
  wait_ready("vm1", "host-a");
  auto m = ctl({"migrate", "vm1", "--to", "host-b"});
  ASSERT_EQ(m.status, 0) << m.output;
  for (int i = 0; i < 1500 && !parked(); ++i)
    std::this_thread::sleep_for(20ms);
  ASSERT_TRUE(parked()) << c.story();

  switch (cell.what) {
    case fault::source_agent_killed:
      ASSERT_EQ(c.restart_agent("host-a", SIGKILL), "");
      break;
    case fault::target_agent_killed:
      ASSERT_EQ(c.restart_agent("host-b", SIGKILL), "");
      break;
    case fault::orchestrator_killed:
      c.orchestrator->signal(SIGKILL);
      c.orchestrator->wait(5s);
      c.orchestrator_env.clear(); // the restarted one does not park again
      ASSERT_EQ(c.start_orchestrator(), "");
      break;
    case fault::link_reset:
      ASSERT_TRUE(c.reset_migration_connections("host-b"));
      break;
    case fault::link_silent:
      ASSERT_TRUE(c.set_migration_link("host-b", false));
      std::this_thread::sleep_for(5s);
      ASSERT_TRUE(c.set_migration_link("host-b", true));
      break;
  }

  std::string state;
  for (int i = 0; i < 600; ++i) {
    state = job_state();
    if (state == "succeeded" || state == "failed" || state == "cancelled")
      break;
    std::this_thread::sleep_for(100ms);
  }
  ASSERT_TRUE(state == "succeeded" || state == "failed" || state == "cancelled")
    << state << c.story();
  std::printf("%s: the job %s\n", name_of(cell).c_str(), state.c_str());
  // The sweeper removes a leftover target within a refresh or two.
  std::vector<std::string> where;
  for (int i = 0; i < 50; ++i) {
    where = placements()["vm1"];
    if (where.size() == 1)
      break;
    std::this_thread::sleep_for(200ms);
  }
  ASSERT_EQ(where.size(), 1U) << "exactly one copy" << c.story();
  EXPECT_EQ(where[0], state == "succeeded" ? "host-b" : "host-a");
  verify_guest("vm1", where[0]);
}

std::vector<fault_cell> every_cell() {
  std::vector<fault_cell> out;
  for (const char* s : {"preparing-target", "running", "completing"})
    for (auto f : {fault::source_agent_killed, fault::target_agent_killed,
                   fault::orchestrator_killed, fault::link_reset, fault::link_silent})
      out.push_back({s, f});
  return out;
}

INSTANTIATE_TEST_SUITE_P(cells, fault_matrix, ::testing::ValuesIn(every_cell()),
                         [](const auto& p) { return name_of(p.param); });

} // namespace
} // namespace ferry::test
