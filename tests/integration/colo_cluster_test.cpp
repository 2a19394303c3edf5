// COLO pairs run by the orchestrator, on three agents (each in its own
// network namespace where the test may make them): `ferryctl protect` makes
// a secondary and the pair reaches `protected`; the primary's host killed →
// the guest runs on the secondary within 5 s and is protected again on the
// third host within 30 s; the primary's host cut off → exactly one copy runs
// (the cut-off primary fenced itself), and the stale copy goes once the host
// is back; a killed secondary host or a cut link between the two leaves the
// primary running (fenced until the orchestrator says so) and the guest
// protected again; evacuating the primary's host (after an orchestrator restart)
// moves the guest to its secondary and protects it again. The survivor is
// verified page by page.

#include "orchestrator/journal.hpp"
#include "tests/support/cluster_fixture.hpp"
#include "tools/qmp/qmp_client.hpp"

#include <boost/json.hpp>
#include <gtest/gtest.h>

#include <signal.h>

#include <chrono>
#include <functional>
#include <string>
#include <thread>

namespace ferry::test {
namespace {

namespace json = boost::json;
using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;

class colo_cluster : public cluster {
protected:
  // vm1's pair as the orchestrator shows it (null if none).
  json::value pair() {
    auto r = ctl({"pairs", "-o", "json"});
    if (r.status != 0)
      return nullptr;
    const auto all = json::parse(r.output);
    for (const auto& p : all.as_array())
      if (p.at("guest") == "vm1")
        return p;
    return nullptr;
  }

  // Waits until vm1's pair satisfies `ok`; the last one seen.
  json::value wait_pair(const std::function<bool(const json::value&)>& ok,
                        std::chrono::seconds limit) {
    const auto deadline = clock_type::now() + limit;
    json::value p;
    while (clock_type::now() < deadline) {
      p = pair();
      if (!p.is_null() && ok(p))
        return p;
      std::this_thread::sleep_for(200ms);
    }
    return p;
  }

  static bool protected_on(const json::value& p, const std::string& primary) {
    return p.at("state") == "protected" && p.at("primary") == primary.c_str();
  }

  // query-status of vm1 on host ("" when it does not answer).
  std::string status_on(const std::string& host) {
    try {
      qmp_tool::qmp_client q{run_dir(host) + "/vm1.qmp", 3s};
      q.negotiate();
      return std::string{q.execute("query-status").at("return").at("status").as_string()};
    } catch (const std::exception&) {
      return {};
    }
  }

  // Whether vm1's process on `host` said `text` on its stderr (the agent
  // keeps it as RUN_DIR/vm1.log).
  bool vm1_said(const std::string& host, const std::string& text) {
    return read_file(run_dir(host) + "/vm1.log").find(text) != std::string::npos;
  }

  // The primary's run state between checkpoints. A query that lands in a
  // checkpoint's pause reads "colo" (QEMU's run state while COLO holds the
  // guest stopped), so one reading alone cannot tell a running primary.
  std::string primary_status(const std::string& host) {
    std::string s;
    for (int i = 0; i < 20; ++i) {
      s = status_on(host);
      if (s != "colo")
        return s;
      std::this_thread::sleep_for(100ms);
    }
    return s;
  }

  // vm1 protected from host-a to host-b, a few checkpoints along.
  void protect_on_a_and_b() {
    create("vm1", "host-a");
    wait_ready("vm1", "host-a");
    auto r = ctl({"protect", "vm1", "--secondary", "host-b"});
    ASSERT_EQ(r.status, 0) << r.output;
    auto p = wait_pair([](const json::value& v) { return v.at("state") == "protected"; }, 60s);
    ASSERT_FALSE(p.is_null());
    ASSERT_EQ(p.at("state"), "protected") << json::serialize(p) << c.story();
    EXPECT_EQ(p.at("primary"), "host-a");
    EXPECT_EQ(p.at("secondary"), "host-b");
    EXPECT_EQ(primary_status("host-a"), "running");
    EXPECT_EQ(status_on("host-b"), "inmigrate") << "a secondary holds the guest, it never runs it";
    std::this_thread::sleep_for(1s);
  }
};

TEST_F(colo_cluster, a_killed_primary_host_fails_over_and_the_guest_is_protected_again) {
  protect_on_a_and_b();
  // A protected guest is not moved or protected twice.
  auto mv = ctl({"migrate", "vm1", "--to", "host-c"});
  EXPECT_NE(mv.status, 0);
  EXPECT_NE(mv.output.find("in a COLO pair"), std::string::npos) << mv.output;
  auto twice = ctl({"protect", "vm1"});
  EXPECT_NE(twice.status, 0);
  EXPECT_NE(twice.output.find("already in a COLO pair"), std::string::npos) << twice.output;

  const auto killed = clock_type::now();
  c.kill_host("host-a");
  while (status_on("host-b") != "running" && clock_type::now() - killed < 20s)
    std::this_thread::sleep_for(50ms);
  const auto ran = clock_type::now() - killed;
  ASSERT_EQ(primary_status("host-b"), "running") << c.story();
  EXPECT_LT(ran, 5s) << "the secondary runs the guest within 5 s";
  auto p = wait_pair([](const json::value& v) { return protected_on(v, "host-b"); },
                     std::chrono::duration_cast<std::chrono::seconds>(30s - ran));
  const auto again = clock_type::now() - killed;
  ASSERT_TRUE(!p.is_null() && protected_on(p, "host-b")) << json::serialize(p) << c.story();
  EXPECT_LT(again, 30s) << "protected again within 30 s";
  EXPECT_EQ(p.at("secondary"), "host-c") << "the only other host up";
  EXPECT_EQ(p.at("failovers").to_number<int64_t>(), 1);
  std::printf("ran on host-b %.1f s after the kill, protected again on host-c after %.1f s\n",
              std::chrono::duration<double>(ran).count(),
              std::chrono::duration<double>(again).count());
  EXPECT_EQ(status_on("host-c"), "inmigrate");
  verify_guest("vm1", "host-b");

  // The journal walked the cycle.
  {
    auto log = journal::open_for_reading(c.journal_path());
    ASSERT_TRUE(log);
    std::vector<std::string> walk;
    for (const auto& s : (*log)->pair_history())
      walk.push_back(std::string{to_string(s.from)} + ">" + std::string{to_string(s.to)});
    EXPECT_EQ(walk, (std::vector<std::string>{
                      "protecting>protected", "protected>failing-over", "failing-over>unprotected",
                      "unprotected>re-protecting", "re-protecting>protected"}));
  }

  // Unprotect: the primary runs on alone, the secondary goes.
  auto un = ctl({"unprotect", "vm1"});
  ASSERT_EQ(un.status, 0) << un.output;
  EXPECT_TRUE(pair().is_null());
  const auto deadline = clock_type::now() + 20s;
  while (placements()["vm1"] != std::vector<std::string>{"host-b"} && clock_type::now() < deadline)
    std::this_thread::sleep_for(200ms);
  EXPECT_EQ(placements()["vm1"], std::vector<std::string>{"host-b"}) << c.story();
  verify_guest("vm1", "host-b");
}

TEST_F(colo_cluster, a_primary_host_cut_off_leaves_exactly_one_running_copy) {
  if (!c.in_namespaces())
    GTEST_SKIP() << "cutting a link needs network namespaces (root and iproute2)";
  protect_on_a_and_b();
  ASSERT_TRUE(c.set_link("host-a", false) && c.set_migration_link("host-a", false));
  const auto cut = clock_type::now();
  // host-a's guest hears nothing from its secondary: it fences itself; the
  // orchestrator, which cannot reach host-a, promotes host-b only after the
  // fence timeout.
  bool two = false;
  std::string a, b;
  while (clock_type::now() - cut < 30s && (b = status_on("host-b")) != "running") {
    a = status_on("host-a");
    two = two || (a == "running" && b == "running");
    std::this_thread::sleep_for(50ms);
  }
  ASSERT_EQ(b, "running") << c.story();
  EXPECT_FALSE(two) << "never two running copies";
  EXPECT_EQ(status_on("host-a"), "colo") << "the cut-off primary fenced itself";
  EXPECT_TRUE(vm1_said("host-a", "COLO primary fenced")) << "it paused for silence" << c.story();
  std::printf("host-b runs the guest %.1f s after the cut\n",
              std::chrono::duration<double>(clock_type::now() - cut).count());
  verify_guest("vm1", "host-b");
  auto p = wait_pair([](const json::value& v) { return protected_on(v, "host-b"); }, 40s);
  EXPECT_TRUE(!p.is_null() && protected_on(p, "host-b")) << json::serialize(p) << c.story();
  EXPECT_EQ(status_on("host-a"), "colo") << "still fenced while cut off";
  // Back: the stale copy goes, never having run again.
  ASSERT_TRUE(c.set_link("host-a", true) && c.set_migration_link("host-a", true));
  const auto healed = clock_type::now();
  while (!status_on("host-a").empty() && clock_type::now() - healed < 30s) {
    EXPECT_NE(status_on("host-a"), "running");
    std::this_thread::sleep_for(100ms);
  }
  EXPECT_EQ(status_on("host-a"), "") << "the stale copy is gone" << c.story();
  EXPECT_EQ(primary_status("host-b"), "running");
}

TEST_F(colo_cluster, evacuating_the_primary_host_keeps_the_guest_protected) {
  protect_on_a_and_b();
  // A restarted orchestrator follows the pair the journal holds.
  c.orchestrator->signal(SIGKILL);
  c.orchestrator->wait(5s);
  start_orchestrator();
  auto p = wait_pair([](const json::value& v) { return v.at("state") == "protected"; }, 20s);
  ASSERT_TRUE(!p.is_null() && protected_on(p, "host-a")) << json::serialize(p) << c.story();

  auto ev = ctl({"evacuate", "host-a", "-o", "json"});
  ASSERT_EQ(ev.status, 0) << ev.output;
  EXPECT_NE(ev.output.find("moves with its COLO pair"), std::string::npos) << ev.output;
  // The secondary is promoted (the move costs one checkpoint's pause), and
  // protection is made again on host-c; host-a keeps no copy.
  p = wait_pair([](const json::value& v) { return protected_on(v, "host-b"); }, 60s);
  ASSERT_TRUE(!p.is_null() && protected_on(p, "host-b")) << json::serialize(p) << c.story();
  EXPECT_EQ(p.at("secondary"), "host-c");
  const auto deadline = clock_type::now() + 20s;
  while (!status_on("host-a").empty() && clock_type::now() < deadline)
    std::this_thread::sleep_for(100ms);
  EXPECT_EQ(status_on("host-a"), "") << "nothing left on the evacuated host" << c.story();
  // The journal's evacuation finished once no pair had a side on host-a.
  bool finished = false;
  for (int i = 0; i < 100 && !finished; ++i) {
    auto log = journal::open_for_reading(c.journal_path());
    finished = log && (*log)->evacuations(false).size() == 1 && (*log)->evacuations(true).empty();
    if (!finished)
      std::this_thread::sleep_for(200ms);
  }
  EXPECT_TRUE(finished) << c.story();
  verify_guest("vm1", "host-b");
}

TEST_F(colo_cluster, a_killed_secondary_host_leaves_the_guest_running_and_protected_elsewhere) {
  protect_on_a_and_b();
  const size_t before = read_file(run_dir("host-a") + "/vm1.serial").size();
  const auto killed = clock_type::now();
  c.kill_host("host-b");
  // The primary hears its secondary's link end and runs on alone at once;
  // the orchestrator protects it again on the only other host.
  auto p = wait_pair(
    [](const json::value& v) { return protected_on(v, "host-a") && v.at("secondary") == "host-c"; },
    30s);
  ASSERT_TRUE(!p.is_null() && protected_on(p, "host-a")) << json::serialize(p) << c.story();
  std::printf("protected again on host-c %.1f s after host-b was killed\n",
              std::chrono::duration<double>(clock_type::now() - killed).count());
  EXPECT_EQ(p.at("failovers").to_number<int64_t>(), 0) << "the guest never moved";
  EXPECT_GT(read_file(run_dir("host-a") + "/vm1.serial").size(), before)
    << "it ran on all along (its output went on)";
  verify_guest("vm1", "host-a");
}

TEST_F(colo_cluster,
       a_cut_link_between_the_pair_fences_the_primary_until_the_orchestrator_decides) {
  if (!c.in_namespaces())
    GTEST_SKIP() << "cutting a link needs network namespaces (root and iproute2)";
  protect_on_a_and_b();
  // Only the primary's migration network goes: both hosts still answer the
  // orchestrator. The primary fences itself (run state colo) after 3 s of
  // silence; the orchestrator, reaching both, lets the primary run on alone
  // and removes the secondary, which never runs; once the link is back the
  // guest is protected again.
  ASSERT_TRUE(c.set_migration_link("host-a", false));
  const auto cut = clock_type::now();
  // (A checkpoint under way at the cut also reads "colo": the fence is
  // what the primary says when it pauses for silence.)
  bool fenced = false, b_ran = false;
  std::string a;
  while (clock_type::now() - cut < 30s) {
    a = status_on("host-a");
    fenced = fenced || vm1_said("host-a", "COLO primary fenced");
    b_ran = b_ran || status_on("host-b") == "running";
    if (fenced && a == "running")
      break;
    std::this_thread::sleep_for(50ms);
  }
  EXPECT_TRUE(fenced) << "the primary paused itself while it could not tell" << c.story();
  ASSERT_EQ(a, "running") << "the orchestrator let the primary run on alone" << c.story();
  std::printf("host-a runs alone again %.1f s after the cut\n",
              std::chrono::duration<double>(clock_type::now() - cut).count());
  // The pair went unprotected with the primary running alone (its tries to
  // protect again fail while the link is down, each undone).
  bool ended_on_primary = false;
  for (int i = 0; i < 100 && !ended_on_primary; ++i) {
    auto log = journal::open_for_reading(c.journal_path());
    if (log)
      for (const auto& step : (*log)->pair_history())
        ended_on_primary =
          ended_on_primary || (step.to == pair_state::unprotected &&
                               step.note.find("COLO ended on the primary") != std::string::npos);
    b_ran = b_ran || status_on("host-b") == "running";
    if (!ended_on_primary)
      std::this_thread::sleep_for(100ms);
  }
  EXPECT_TRUE(ended_on_primary) << c.story();
  EXPECT_FALSE(b_ran) << "the secondary never ran";
  verify_guest("vm1", "host-a");
  ASSERT_TRUE(c.set_migration_link("host-a", true));
  auto p = wait_pair([](const json::value& v) { return protected_on(v, "host-a"); }, 60s);
  EXPECT_TRUE(!p.is_null() && protected_on(p, "host-a")) << json::serialize(p) << c.story();
}

} // namespace
} // namespace ferry::test
