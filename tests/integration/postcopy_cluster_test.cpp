// Postcopy in a cluster (issue 18): the escalation ladder's last rung where
// policy allows it, and recovery the orchestrator runs on its own. A guest
// too hot for precopy (an 8 MiB working set rewritten as fast as it runs, a
// 1 ms downtime limit) climbs straight to postcopy; its owed pages follow at
// 2 MiB/s. Mid-postcopy the link breaks — migrate-pause on the source (any
// machine), or the target's migration link silently cut (network
// namespaces) — both sides pause, and the orchestrator alone sends
// migrate-recover and resume, journaling each attempt. The job succeeds,
// the guest runs on its target only and verifies page by page.

#include "tests/support/cluster_fixture.hpp"
#include "tests/support/kvm_skip.hpp"
#include "tests/support/process.hpp"
#include "tests/support/test_cluster.hpp"
#include "tools/ferryctl/http_client.hpp"
#include "tools/qmp/qmp_client.hpp"

#include <boost/json.hpp>
#include <gtest/gtest.h>

#include <signal.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <iostream>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace ferry::test {
namespace {

namespace json = boost::json;
using namespace std::chrono_literals;

class postcopy_cluster : public ::testing::Test {
protected:
  void SetUp() override {
    auto err = c.start({"host-a", "host-b"}, "max_bandwidth = 33554432\ndowntime_limit_ms = 1\n"
                                             "escalate_after_passes = 2\ndowntime_steps = 0\n"
                                             "auto_converge_step = false\n"
                                             "dirty_limit_step = false\npostcopy_step = true\n"
                                             "max_postcopy_bandwidth = 2097152\n");
    ASSERT_TRUE(err.empty()) << err;
    const std::string img = c.dir.file("guest.img");
    auto i = run({binary("tools/ferry-testguest"), "image", img, "--ram-top", "64M", "--ws-pages",
                  "2048", "--report-every", "50"});
    ASSERT_EQ(i.status, 0) << i.output;
    std::vector<std::string> args{"create",   "hot", "--host",  "host-a",
                                  "--memory", "64M", "--image", img};
    // KVM where usable, else the -accel none dirtier playing the test guest.
    if (!kvm_unavailable_reason().empty())
      args.insert(args.end(), {"--accel", "none", "--dirty-rate", "20000"});
    auto r = c.ctl(args);
    ASSERT_EQ(r.status, 0) << r.output;
    ASSERT_TRUE(wait_for_text(c.run_dir("host-a") + "/hot.serial", "ready", 120s));
  }
  void TearDown() override {
    if (HasFailure())
      std::cerr << c.story();
  }

  json::value qmp(const std::string& host, const std::string& command) {
    qmp_tool::qmp_client q{c.run_dir(host) + "/hot.qmp", 3s};
    q.negotiate();
    return q.execute(command);
  }
  std::string status_on(const std::string& host) {
    try {
      return std::string{qmp(host, "query-migrate").at("return").at("status").as_string()};
    } catch (const std::exception&) {
      return {};
    }
  }
  // Until host's migration status is one of `want`.
  bool wait_status(const std::string& host, const std::set<std::string>& want,
                   std::chrono::seconds within) {
    const auto end = std::chrono::steady_clock::now() + within;
    while (std::chrono::steady_clock::now() < end) {
      if (want.count(status_on(host)) != 0)
        return true;
      std::this_thread::sleep_for(20ms);
    }
    return false;
  }
  // The job's state once it succeeded or failed, or as it was at `within`.
  std::string wait_job_end(std::chrono::seconds within) {
    const auto end = std::chrono::steady_clock::now() + within;
    std::string state;
    while (state != "succeeded" && state != "failed" && std::chrono::steady_clock::now() < end) {
      std::this_thread::sleep_for(100ms);
      state = std::string{job().at("state").as_string()};
    }
    return state;
  }
  json::object job() {
    const auto jobs = json::parse(c.ctl({"migrations", "-o", "json"}).output);
    EXPECT_EQ(jobs.as_array().size(), 1U);
    return jobs.as_array().at(0).as_object();
  }

  // Migrates the guest, breaks the postcopy link with `cut` once postcopy
  // runs and expects the orchestrator to finish the move on its own. With
  // `heal`, the link stays broken until both sides paused (the guest running
  // on at its target meanwhile), then comes back; without, the orchestrator
  // recovers at once.
  void break_and_recover(const std::function<bool()>& cut, const std::function<bool()>& heal = {},
                         bool restart_orchestrator = false) {
    auto m = c.ctl({"migrate", "hot", "--to", "host-b"});
    ASSERT_EQ(m.status, 0) << m.output;
    ASSERT_TRUE(wait_status("host-a", {"postcopy-active"}, 120s)) << status_on("host-a");
    std::this_thread::sleep_for(300ms);
    ASSERT_TRUE(cut());
    if (heal) {
      // Both sides leave postcopy-active (the orchestrator's attempts, which
      // cannot get through yet, move them between paused and recover).
      const std::set<std::string> broken{"postcopy-paused", "postcopy-recover"};
      ASSERT_TRUE(wait_status("host-a", broken, 30s)) << status_on("host-a");
      ASSERT_TRUE(wait_status("host-b", broken, 30s)) << status_on("host-b");
      EXPECT_EQ(qmp("host-b", "query-status").at("return").at("status"), "running");
      EXPECT_EQ(qmp("host-a", "query-status").at("return").at("status"), "finish-migrate");
      std::this_thread::sleep_for(2s); // attempts fail and back off meanwhile
      if (restart_orchestrator) {
        c.orchestrator->signal(SIGKILL);
        c.orchestrator->wait(5s);
      }
      ASSERT_TRUE(heal());
      if (restart_orchestrator) {
        // The journal says the job is in postcopy: the new orchestrator
        // follows it and recovers it, never cancels or takes it back.
        auto err = c.start_orchestrator();
        ASSERT_TRUE(err.empty()) << err;
      }
    }
    const std::string state = wait_job_end(60s);
    const auto j = job();
    ASSERT_EQ(state, "succeeded") << json::serialize(j);
    const auto& steps = j.at("steps").as_array();
    const auto has = [&](const char* prefix) {
      return std::any_of(steps.begin(), steps.end(), [&](const json::value& s) {
        return std::string{s.as_string()}.rfind(prefix, 0) == 0;
      });
    };
    EXPECT_TRUE(has("postcopy: the guest moves now")) << json::serialize(steps);
    EXPECT_TRUE(has("postcopy-recover attempt 1")) << json::serialize(steps);
    // (Across a restart the old orchestrator's attempt may finish the move
    // before the new one sees postcopy-active again.)
    if (!restart_orchestrator) {
      EXPECT_TRUE(has("postcopy recovered after")) << json::serialize(steps);
    }
    std::printf("postcopy in a cluster: %s\n", json::serialize(steps).c_str());
    EXPECT_EQ(c.placements()["hot"], std::vector<std::string>{"host-b"});
    verify_guest_memory(c, "hot", "host-b", 64u << 20);
    if (restart_orchestrator)
      return; // the new orchestrator's counters start afresh
    // The orchestrator counted it.
    const auto metrics = ctl::http_request({"127.0.0.1", c.api_port}, "GET", "/metrics", {},
                                           "Bearer " + c.viewer_token);
    ASSERT_EQ(metrics.status, 200) << metrics.body;
    EXPECT_NE(
      metrics.body.find("ferry_orchestrator_postcopy_recoveries_total{result=\"recovered\"} 1"),
      std::string::npos)
      << metrics.body;
    EXPECT_NE(metrics.body.find("ferry_orchestrator_escalation_steps_total{step=\"postcopy\"} 1"),
              std::string::npos);
  }

  test_cluster c;
};

TEST_F(postcopy_cluster, the_orchestrator_recovers_a_paused_postcopy_on_its_own) {
  break_and_recover(
    [this] { return qmp("host-a", "migrate-pause").as_object().contains("return"); });
}

TEST_F(postcopy_cluster, the_orchestrator_recovers_on_its_own_after_a_link_cut) {
  if (!c.in_namespaces())
    GTEST_SKIP() << "cutting a link needs network namespaces (root and iproute2)";
  break_and_recover([this] { return c.set_migration_link("host-b", false); },
                    [this] { return c.set_migration_link("host-b", true); });
}

// The orchestrator killed while the postcopy is paused: the link comes back
// while none runs; the restarted one reads the job's postcopy rung from the
// journal and recovers it.
TEST_F(postcopy_cluster, a_restarted_orchestrator_resumes_the_recovery) {
  if (!c.in_namespaces())
    GTEST_SKIP() << "cutting a link needs network namespaces (root and iproute2)";
  break_and_recover([this] { return c.set_migration_link("host-b", false); },
                    [this] { return c.set_migration_link("host-b", true); }, true);
}

// The target's guest killed in postcopy: the source cannot tell that from a
// cut link and pauses; the orchestrator, whose target host answers without
// the guest, surfaces the loss — the job fails saying so, the source's stale
// copy is abandoned (failed) and stays paused, nothing is destroyed.
TEST_F(postcopy_cluster, a_target_killed_in_postcopy_is_surfaced_as_a_lost_guest) {
  auto m = c.ctl({"migrate", "hot", "--to", "host-b"});
  ASSERT_EQ(m.status, 0) << m.output;
  ASSERT_TRUE(wait_status("host-a", {"postcopy-active"}, 120s)) << status_on("host-a");
  const auto record = json::parse(read_file(c.run_dir("host-b") + "/hot.guest"));
  const int pid = record.at("pid").to_number<int>();
  ASSERT_GT(pid, 1);
  ASSERT_EQ(::kill(pid, SIGKILL), 0);
  const std::string state = wait_job_end(30s);
  const auto j = job();
  ASSERT_EQ(state, "failed") << json::serialize(j);
  const std::string error{j.at("error").as_string()};
  EXPECT_NE(error.find("the guest was lost in postcopy"), std::string::npos) << error;
  EXPECT_NE(error.find("no longer runs it"), std::string::npos) << error;
  EXPECT_EQ(status_on("host-a"), "failed");
  std::this_thread::sleep_for(500ms);
  EXPECT_EQ(qmp("host-a", "query-status").at("return").at("status"), "postmigrate")
    << "the stale copy never resumes on its own";
  EXPECT_EQ(c.placements()["hot"], std::vector<std::string>{"host-a"}) << "nothing destroyed";
}

} // namespace
} // namespace ferry::test
