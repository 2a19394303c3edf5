// Snapshots through the orchestrator: `ferryctl snapshot GUEST TAG` saves a
// running guest's state into its qcow2 disk (the agent runs snapshot-save
// as a QMP job), `--restore` loads it back into the running guest, whose
// memory then verifies page by page, `--delete` removes it; qemu-img lists
// and checks the image between steps. Every operation is journaled with how
// it ended, counted in the orchestrator's metrics, and a failing one (a tag
// that does not exist) reports the agent's reason. Works with -accel none.

#include "orchestrator/journal.hpp"
#include "tests/support/cluster_fixture.hpp"
#include "tests/support/kvm_skip.hpp"
#include "tests/support/process.hpp"
#include "tests/support/qemu_img.hpp"
#include "tools/ferryctl/http_client.hpp"

#include <boost/json.hpp>
#include <gtest/gtest.h>

#include <signal.h>
#include <unistd.h>

#include <functional>
#include <thread>

using namespace ferry;
using namespace ferry::test;
namespace json = boost::json;
using namespace std::chrono_literals;

namespace {

class snapshot_cluster : public cluster {
protected:
  // Every test here starts from vm1 running on its qcow2 disk.
  void SetUp() override {
    if (!have_qemu_img())
      GTEST_SKIP() << "qemu-img (Debian qemu-utils) makes the qcow2 disk; not installed";
    cluster::SetUp();
    if (HasFatalFailure() || IsSkipped())
      return;
    start_on_qcow2();
  }
  std::string disk() const { return c.dir.file("disk.qcow2"); }
  // vm1 on host-a, booting from the test image as a qcow2 disk.
  void start_on_qcow2() {
    qemu_img({"convert", "-f", "raw", "-O", "qcow2", image(), disk()});
    std::vector<std::string> args{"create",   "vm1", "--host",  "host-a",
                                  "--memory", "8M",  "--image", disk()};
    if (!kvm_unavailable_reason().empty())
      args.insert(args.end(), {"--accel", "none", "--dirty-rate", "20000"});
    auto r = ctl(args);
    ASSERT_EQ(r.status, 0) << r.output;
    wait_ready("vm1", "host-a");
  }
};

} // namespace

TEST_F(snapshot_cluster, save_restore_and_delete_through_ferryctl_are_journaled_and_counted) {
  auto r = ctl({"snapshot", "vm1", "before"});
  ASSERT_EQ(r.status, 0) << r.output << c.story();
  EXPECT_NE(r.output.find("snapshot 'before' saved on host-a"), std::string::npos) << r.output;
  EXPECT_NE(qemu_img({"snapshot", "-l", disk()}).find("before"), std::string::npos);

  r = ctl({"snapshot", "vm1", "before", "--restore"});
  ASSERT_EQ(r.status, 0) << r.output;
  verify_guest("vm1", "host-a");

  r = ctl({"snapshot", "vm1", "never-taken", "--restore"});
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("Snapshot 'never-taken' does not exist"), std::string::npos) << r.output;
  r = ctl({"snapshot", "nobody", "x"});
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("no host runs a guest named 'nobody'"), std::string::npos) << r.output;

  r = ctl({"snapshot", "vm1", "before", "--delete"});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(qemu_img({"snapshot", "-l", disk()}).find("before"), std::string::npos);
  const std::string check = qemu_img({"check", disk()});
  EXPECT_NE(check.find("No errors were found"), std::string::npos) << check;

  // The journal has every operation and how it ended; so has the API.
  {
    auto log = journal::open_for_reading(c.journal_path());
    ASSERT_TRUE(log);
    std::vector<std::string> seen;
    for (const auto& s : (*log)->snapshots(false))
      seen.push_back(s.op + " " + s.tag + " " + s.state);
    EXPECT_EQ(seen, (std::vector<std::string>{"save before done", "restore before done",
                                              "restore never-taken failed", "delete before done"}));
  }
  r = ctl({"snapshots", "-o", "json"});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(json::parse(r.output).as_array().size(), 4U) << r.output;
  const auto metrics =
    ctl::http_request({"127.0.0.1", c.api_port}, "GET", "/metrics", {}, "Bearer " + c.viewer_token);
  ASSERT_EQ(metrics.status, 200) << metrics.body;
  for (const char* line : {"ferry_orchestrator_snapshots_total{op=\"save\",result=\"done\"} 1",
                           "ferry_orchestrator_snapshots_total{op=\"restore\",result=\"done\"} 1",
                           "ferry_orchestrator_snapshots_total{op=\"restore\",result=\"failed\"} 1",
                           "ferry_orchestrator_snapshots_total{op=\"delete\",result=\"done\"} 1"})
    EXPECT_NE(metrics.body.find(line), std::string::npos) << line << "\n" << metrics.body;
}

namespace {

// Each agent holds its snapshot jobs 3 s (a test-only hook that says so on
// the guest's stderr), so one is still under way when the orchestrator is
// killed; or the orchestrator holds an operation 3 s between journaling it
// and sending it, and is killed there.
class snapshot_restart : public snapshot_cluster {
protected:
  void SetUp() override {
    ::setenv("FERRY_FAULT_SNAPSHOT_MS", "3000", 1);
    if (!unsent_hold_ms().empty())
      c.orchestrator_env = {"FERRY_FAULT_SNAPSHOT_UNSENT_MS=" + unsent_hold_ms()};
    snapshot_cluster::SetUp();
    ::unsetenv("FERRY_FAULT_SNAPSHOT_MS");
  }
  virtual std::string unsent_hold_ms() const { return {}; }

  // The state the journal gives the first snapshot operation ("" if none).
  std::string journaled() const {
    auto log = journal::open_for_reading(c.journal_path());
    if (!log)
      return std::string{};
    const auto ops = (*log)->snapshots(false);
    return ops.empty() ? std::string{} : ops.front().state;
  }
  // `ferryctl snapshot vm1 across` is asked; once `at_fault_point` holds the
  // orchestrator is killed (the operation journaled as running), started
  // again, and must bring the operation to its end: done, in the image, and
  // the guest intact.
  void kill_when(const std::function<bool()>& at_fault_point) {
    std::thread caller{[&] { (void) ctl({"snapshot", "vm1", "across"}); }};
    const auto deadline = std::chrono::steady_clock::now() + 20s;
    while (!at_fault_point() && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(20ms);
    const bool reached = at_fault_point();
    c.orchestrator->signal(SIGKILL);
    c.orchestrator->wait(5s);
    caller.join();
    ASSERT_TRUE(reached) << c.story();
    ASSERT_EQ(journaled(), "running") << "killed before the operation ended";
    c.orchestrator_env.clear();
    auto err = c.start_orchestrator();
    ASSERT_TRUE(err.empty()) << err;
    const auto until = std::chrono::steady_clock::now() + 30s;
    while (journaled() == "running" && std::chrono::steady_clock::now() < until)
      std::this_thread::sleep_for(100ms);
    EXPECT_EQ(journaled(), "done") << c.story();
    EXPECT_NE(qemu_img({"snapshot", "-l", disk()}).find("across"), std::string::npos);
    auto r = ctl({"snapshots", "-o", "json"});
    ASSERT_EQ(r.status, 0) << r.output;
    EXPECT_EQ(json::parse(r.output).at(0).at("state"), "done") << r.output;
    verify_guest("vm1", "host-a");
  }
};

class snapshot_unsent : public snapshot_restart {
protected:
  std::string unsent_hold_ms() const override { return "3000"; }
};

} // namespace

TEST_F(snapshot_restart, an_operation_under_way_when_the_orchestrator_dies_is_followed_to_its_end) {
  const std::string guest_log = run_dir("host-a") + "/vm1.log";
  kill_when([&] {
    return read_file(guest_log).find("fault point: snapshot job under way") != std::string::npos;
  });
}

TEST_F(snapshot_unsent, an_operation_journaled_but_never_sent_is_started_by_the_next_orchestrator) {
  kill_when(
    [&] { return c.orchestrator->stderr_text().find("journaled, not sent") != std::string::npos; });
  // Fails without the restart's start: "the agent no longer knows the job".
}
