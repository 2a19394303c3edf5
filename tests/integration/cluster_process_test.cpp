// A Ferry cluster as separate processes: three ferry-agent daemons, the
// orchestrator, and ferryctl. Running KVM test guests move with `ferryctl
// migrate` and `ferryctl evacuate`; every moved guest is stopped on its new
// host, dumped and verified page by page. The orchestrator is killed with
// SIGKILL in the middle of an evacuation and restarted: the evacuation
// completes and every guest runs exactly once.

#include "orchestrator/journal.hpp"
#include "tests/support/cluster_fixture.hpp"
#include "tests/support/kvm_skip.hpp"
#include "tests/support/process.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/test_cluster.hpp"
#include "tools/qmp/qmp_client.hpp"

#include <boost/json.hpp>
#include <gtest/gtest.h>

#include <signal.h>
#include <sys/stat.h>

#include <algorithm>
#include <array>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <set>
#include <thread>

namespace ferry::test {
namespace {

namespace json = boost::json;
using namespace std::chrono_literals;

TEST_F(cluster, ferryctl_migrate_moves_a_running_guest) {
  create("vm1", "host-a");
  wait_ready("vm1", "host-a");
  auto r = ctl({"migrate", "vm1", "--to", "host-b", "--wait", "-o", "json"});
  ASSERT_EQ(r.status, 0) << r.output << c.orchestrator->stderr_text();
  auto where = placements();
  ASSERT_EQ(where["vm1"], std::vector<std::string>{"host-b"});
  verify_guest("vm1", "host-b");
  // The journal walked the whole state machine.
  const auto mv = json::parse(ctl({"migrations", "-o", "json"}).output);
  const auto& m = mv.as_array();
  ASSERT_EQ(m.size(), 1U);
  EXPECT_EQ(m[0].at("state").as_string(), "succeeded");
  // The journal holds every transition of the happy path, in order.
  {
    auto log = journal::open_for_reading(c.dir.file("journal.db"));
    ASSERT_TRUE(log);
    std::vector<std::string> walk;
    for (const auto& t : (*log)->transitions())
      if (t.job == 1)
        walk.push_back(std::string{to_string(t.from)} + ">" + std::string{to_string(t.to)});
    EXPECT_EQ(walk, (std::vector<std::string>{"pending>scheduling", "scheduling>preparing-target",
                                              "preparing-target>running", "running>completing",
                                              "completing>succeeded"}));
  }
  // An arrived guest is an ordinary guest of its new host: it moves on again.
  auto again = ctl({"migrate", "vm1", "--wait", "-o", "json"});
  ASSERT_EQ(again.status, 0) << again.output;
  where = placements();
  ASSERT_EQ(where["vm1"].size(), 1U);
  EXPECT_NE(where["vm1"][0], "host-b");
  verify_guest("vm1", where["vm1"][0]);
  // A migration to a host that does not exist is refused with the reason.
  auto bad = ctl({"migrate", "vm1", "--to", "host-z"});
  EXPECT_NE(bad.status, 0);
  EXPECT_NE(bad.output.find("unknown host 'host-z'"), std::string::npos) << bad.output;
}

// A guest that cannot start says why, at once: the agent stops waiting for
// the monitor when the process ends and hands back the end of its log (as
// libvirt reports QEMU's stderr), and nothing of it stays behind.
TEST_F(cluster, a_guest_that_cannot_start_says_why_at_once) {
  const std::string stub = c.dir.file("stub.img");
  std::ofstream{stub} << "not a boot sector";
  const auto t0 = std::chrono::steady_clock::now();
  auto r = c.ctl(
    {"create", "broken", "--host", "host-a", "--memory", "8M", "--image", stub, "--accel", "none"});
  EXPECT_NE(r.status, 0);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 10s) << "not the monitor's 25 s wait";
  EXPECT_NE(r.output.find("guest 'broken' did not start"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("shorter than one 512-byte sector"), std::string::npos) << r.output;
  EXPECT_TRUE(c.placements().empty());
}

TEST_F(cluster, evacuation_survives_an_orchestrator_killed_mid_way) {
  const std::vector<std::string> guests{"g1", "g2", "g3", "g4", "g5"};
  for (size_t i = 0; i < guests.size(); ++i)
    create(guests[i], "host-a", static_cast<int>(i));
  for (const auto& g : guests)
    wait_ready(g, "host-a");
  auto r = ctl({"evacuate", "host-a", "-o", "json"});
  ASSERT_EQ(r.status, 0) << r.output;
  // Kill the orchestrator as soon as a move is under way.
  for (int i = 0; i < 200; ++i) {
    auto m = ctl({"migrations", "-o", "json"});
    bool moving = false;
    const auto jobs = json::parse(m.output);
    for (const auto& j : jobs.as_array())
      moving = moving || j.at("state").as_string() != "pending";
    if (moving)
      break;
    std::this_thread::sleep_for(20ms);
  }
  c.orchestrator->signal(SIGKILL);
  c.orchestrator->wait(5s);
  start_orchestrator();
  // Moves interrupted before `migrate` was issued fail on resume and are
  // retried on another host: watch's status 2 (some failed) is expected then.
  auto w = ctl({"watch", "-o", "json"});
  ASSERT_TRUE(w.status == 0 || w.status == 2) << w.output << c.orchestrator->stderr_text();
  auto where = placements();
  for (const auto& g : guests) {
    ASSERT_EQ(where[g].size(), 1U) << g << " must run exactly once";
    EXPECT_NE(where[g][0], "host-a") << g;
    verify_guest(g, where[g][0]);
  }
  // Nothing left behind on the drained host (no orphaned target elsewhere
  // either: placements() counted each guest once).
  const auto hosts = json::parse(ctl({"hosts", "-o", "json"}).output);
  for (const auto& h : hosts.as_array())
    if (h.at("name").as_string() == "host-a") {
      EXPECT_EQ(h.at("guests").to_number<int>(), 0);
      EXPECT_TRUE(h.at("draining").as_bool());
    }
}

TEST_F(cluster, an_agent_killed_mid_evacuation_is_marked_down_and_the_rest_re_planned) {
  const std::vector<std::string> guests{"k1", "k2", "k3", "k4", "k5"};
  for (const auto& g : guests)
    create(g, "host-a");
  for (const auto& g : guests)
    wait_ready(g, "host-a");
  auto r = ctl({"evacuate", "host-a", "-o", "json"});
  ASSERT_EQ(r.status, 0) << r.output;
  // Kill host-b as soon as a move towards it is under way.
  bool seen = false;
  for (int i = 0; i < 500 && !seen; ++i) {
    const auto jobs = json::parse(ctl({"migrations", "-o", "json"}).output);
    for (const auto& j : jobs.as_array())
      seen =
        seen || (j.at("target").as_string() == "host-b" && j.at("state").as_string() != "pending");
    if (!seen)
      std::this_thread::sleep_for(10ms);
  }
  ASSERT_TRUE(seen) << "no move towards host-b started";
  c.kill_host("host-b"); // the host dies, and its guests with it
  auto w = ctl({"watch", "-o", "json"});
  ASSERT_TRUE(w.status == 0 || w.status == 2) << w.output << c.orchestrator->stderr_text();
  // The orchestrator noticed: host-b is down.
  const auto hosts = json::parse(ctl({"hosts", "-o", "json"}).output);
  for (const auto& h : hosts.as_array())
    if (h.at("name").as_string() == "host-b") {
      EXPECT_FALSE(h.at("up").as_bool());
    }
  // A guest that had already arrived on host-b went down with it (host
  // failure); every other guest runs exactly once, on host-c, and verifies.
  const auto jobs = json::parse(ctl({"migrations", "-o", "json"}).output);
  std::set<std::string> landed_on_b;
  for (const auto& j : jobs.as_array())
    if (j.at("target").as_string() == "host-b" && j.at("state").as_string() == "succeeded")
      landed_on_b.insert(std::string{j.at("guest").as_string()});
  auto where = placements();
  for (const auto& g : guests) {
    if (landed_on_b.count(g) != 0) {
      EXPECT_TRUE(where[g].empty()) << g;
      continue;
    }
    ASSERT_EQ(where[g], std::vector<std::string>{"host-c"})
      << g << " " << json::serialize(jobs) << c.orchestrator->stderr_text();
    verify_guest(g, "host-c");
  }
  // The failed moves ended cleanly: each failure names its reason.
  for (const auto& j : jobs.as_array())
    if (j.at("state").as_string() == "failed") {
      EXPECT_FALSE(j.at("error").as_string().empty());
    }
}

// Agents restart without touching guests (issue 15): a guest runs in a
// session of its own, and a restarted agent adopts it from its run
// directory — same process, its QMP relay and inventory back — and can
// migrate it. Tried with SIGTERM (a systemd restart) and SIGKILL (a crash).
TEST_F(cluster, a_restarted_agent_adopts_its_running_guests_and_can_migrate_them) {
  create("vm1", "host-a");
  create("vm2", "host-a");
  wait_ready("vm1", "host-a");
  wait_ready("vm2", "host-a");
  const auto pid_of = [this](const std::string& name) {
    return json::parse(read_file(run_dir("host-a") + "/" + name + ".guest"))
      .at("pid")
      .to_number<int>();
  };
  const int pid1 = pid_of("vm1");
  const int pid2 = pid_of("vm2");
  for (int sig : {SIGTERM, SIGKILL}) {
    const auto err = c.restart_agent("host-a", sig);
    ASSERT_TRUE(err.empty()) << err;
    EXPECT_EQ(::kill(pid1, 0), 0) << "vm1 survived its agent (signal " << sig << ")";
    EXPECT_EQ(::kill(pid2, 0), 0) << "vm2 survived its agent (signal " << sig << ")";
    // Back in the inventory once the orchestrator has reconnected.
    bool back = false;
    for (int i = 0; i < 100 && !back; ++i) {
      const auto guests = json::parse(ctl({"guests", "-o", "json"}).output);
      int on_a = 0;
      for (const auto& g : guests.as_array())
        on_a += g.at("host").as_string() == "host-a" ? 1 : 0;
      back = on_a == 2;
      if (!back)
        std::this_thread::sleep_for(200ms);
    }
    ASSERT_TRUE(back) << c.story();
    auto where = placements();
    EXPECT_EQ(where["vm1"], std::vector<std::string>{"host-a"});
    EXPECT_EQ(where["vm2"], std::vector<std::string>{"host-a"});
    EXPECT_EQ(pid_of("vm1"), pid1) << "the same process, adopted";
  }
  // Its relay works (verify_guest drives QMP through the socket and the
  // migration through the adopted relay) and it migrates.
  auto m = ctl({"migrate", "vm1", "--to", "host-b", "--wait", "-o", "json"});
  ASSERT_EQ(m.status, 0) << m.output << c.story();
  EXPECT_EQ(placements()["vm1"], std::vector<std::string>{"host-b"});
  verify_guest("vm1", "host-b");
  verify_guest("vm2", "host-a");
}

// Agents restarted in the middle of an evacuation (issue 15 item 5): the
// evacuated host's agent while a move off it runs (SIGTERM, as systemd
// restarts it), then the agent of a host receiving a move (SIGKILL, a
// crash). Migrations run in the guests' own processes, so the restarts
// touch no guest: the evacuation finishes with every guest off host-a,
// exactly once, verified page by page.
class slow_evacuation : public cluster {
protected:
  // 8 MiB at 2 MiB/s: ~4 s a move, long enough to restart an agent inside one.
  std::string policy() const override { return "max_bandwidth = 2097152\n"; }

  // The first job in `state` whose `side` ("source"/"target") is one of
  // `hosts`: {guest, source, target}, all empty when none shows up in 20 s.
  std::array<std::string, 3> wait_for_job(const std::string& state, const std::string& side,
                                          const std::set<std::string>& hosts) {
    for (int i = 0; i < 400; ++i) {
      const auto jobs = json::parse(ctl({"migrations", "-o", "json"}).output);
      for (const auto& j : jobs.as_array())
        if (j.at("state").as_string() == state &&
            hosts.count(std::string{j.at(side).as_string()}) != 0)
          return {std::string{j.at("guest").as_string()}, std::string{j.at("source").as_string()},
                  std::string{j.at("target").as_string()}};
      std::this_thread::sleep_for(50ms);
    }
    return {};
  }
};

TEST_F(slow_evacuation, agents_restarted_mid_evacuation_lose_no_guest) {
  const std::vector<std::string> guests{"e1", "e2", "e3"};
  std::map<std::string, int> pids;
  for (const auto& g : guests)
    create(g, "host-a");
  for (const auto& g : guests) {
    wait_ready(g, "host-a");
    pids[g] =
      json::parse(read_file(run_dir("host-a") + "/" + g + ".guest")).at("pid").to_number<int>();
  }
  auto r = ctl({"evacuate", "host-a", "-o", "json"});
  ASSERT_EQ(r.status, 0) << r.output;

  const auto [leaving, from, to] = wait_for_job("running", "source", {"host-a"});
  ASSERT_FALSE(leaving.empty()) << "no move off host-a started" << c.story();
  auto err = c.restart_agent("host-a", SIGTERM);
  ASSERT_TRUE(err.empty()) << err;
  for (const auto& [g, pid] : pids)
    EXPECT_EQ(::kill(pid, 0), 0) << g << " kept running through its agent's restart";

  const auto [arriving, source, target] = wait_for_job("running", "target", {"host-b", "host-c"});
  if (!arriving.empty()) { // else the evacuation finished first: nothing to restart
    err = c.restart_agent(target, SIGKILL);
    ASSERT_TRUE(err.empty()) << err;
  }

  auto w = ctl({"watch", "-o", "json"});
  ASSERT_TRUE(w.status == 0 || w.status == 2) << w.output << c.story();
  auto where = placements();
  for (const auto& g : guests) {
    ASSERT_EQ(where[g].size(), 1U) << g << " must run exactly once" << c.story();
    EXPECT_NE(where[g][0], "host-a") << g;
    verify_guest(g, where[g][0]);
  }
  std::printf("restarted %s while %s moved to %s, then %s while %s arrived\n", from.c_str(),
              leaving.c_str(), to.c_str(), target.empty() ? "nothing" : target.c_str(),
              arriving.c_str());
}

// The target's agent is frozen mid-move (SIGSTOP) while the two guest
// processes finish the migration between themselves, then killed and
// started again: the new agent adopts the guest as arrived — its
// migration port free, no longer a target in the inventory — though no
// agent read its MIGRATION completed event.
TEST_F(slow_evacuation, a_guest_that_arrived_while_its_agent_was_away_is_adopted_as_arrived) {
  create("e1", "host-a");
  wait_ready("e1", "host-a");
  auto r = ctl({"migrate", "e1", "--to", "host-b"});
  ASSERT_EQ(r.status, 0) << r.output;
  const auto [arriving, source, target] = wait_for_job("running", "target", {"host-b"});
  ASSERT_EQ(arriving, "e1") << c.story();
  c.agents.at("host-b")->signal(SIGSTOP);
  std::string status;
  {
    // The source, told to go flat out, finishes in moments.
    qmp_tool::qmp_client q{run_dir("host-a") + "/e1.qmp"};
    q.negotiate();
    q.execute("migrate-set-parameters", {{"max-bandwidth", 1LL << 32}});
    for (int i = 0; i < 500 && status != "completed"; ++i) {
      status = std::string{q.execute("query-migrate").at("return").at("status").as_string()};
      std::this_thread::sleep_for(10ms);
    }
  }
  auto err = c.restart_agent("host-b", SIGKILL);
  ASSERT_TRUE(err.empty()) << err;
  ASSERT_EQ(status, "completed") << "the move did not finish while host-b's agent was frozen";
  auto w = ctl({"watch", "-o", "json"});
  ASSERT_TRUE(w.status == 0 || w.status == 2) << w.output << c.story();
  bool arrived = false;
  for (int i = 0; i < 50 && !arrived; ++i) {
    const auto guests = json::parse(ctl({"guests", "-o", "json"}).output);
    for (const auto& g : guests.as_array())
      if (g.at("name") == "e1" && g.at("host") == "host-b")
        arrived = !g.at("incoming").as_bool();
    if (!arrived)
      std::this_thread::sleep_for(200ms);
  }
  EXPECT_TRUE(arrived) << "e1 is still a waiting target on host-b" << c.story();
  const auto record = json::parse(read_file(run_dir("host-b") + "/e1.guest"));
  EXPECT_EQ(record.at("migration_port"), 0) << record;
  EXPECT_EQ(record.at("incoming"), false) << record;
  auto where = placements();
  ASSERT_EQ(where["e1"], std::vector<std::string>{"host-b"}) << c.story();
  verify_guest("e1", "host-b");
}

// Silent partitions (issue 15), in the middle of precopy: everything to and
// from the target host dropped (its links down), or only its migration
// network's link down (its control link stays up). Either way the source's
// migration ends within the link timeout (10 s) and its guest runs on, the
// destination never runs, the job settles, and the guest is on its source
// alone, verified page by page.
class partition : public cluster {
protected:
  // 8 MiB at 256 KiB/s: ~30 s of precopy, time to cut the link inside it.
  std::string policy() const override { return "max_bandwidth = 262144\n"; }

  json::value qmp_on(const std::string& host, const std::string& command) {
    qmp_tool::qmp_client q{run_dir(host) + "/vm1.qmp", 3s};
    q.negotiate();
    return q.execute(command);
  }
  // query-status of vm1 on host, or "" when it does not answer (gone).
  std::string status_on(const std::string& host) {
    try {
      return std::string{qmp_on(host, "query-status").at("return").at("status").as_string()};
    } catch (const std::exception&) {
      return {};
    }
  }

  // Migrates vm1 host-a -> host-b, runs `cut` inside precopy, and checks
  // the outcome; the source's final status must be one of `ends`.
  void cut_mid_precopy(const std::function<bool()>& cut, const std::function<bool()>& heal,
                       const std::set<std::string>& ends) {
    create("vm1", "host-a");
    wait_ready("vm1", "host-a");
    auto m = ctl({"migrate", "vm1", "--to", "host-b"});
    ASSERT_EQ(m.status, 0) << m.output;
    bool moving = false; // well inside precopy: bytes moved, most to come
    for (int i = 0; i < 200 && !moving; ++i) {
      std::this_thread::sleep_for(50ms);
      try {
        const auto r = qmp_on("host-a", "query-migrate").at("return");
        moving = r.as_object().contains("ram") &&
                 r.at("ram").at("transferred").to_number<uint64_t>() > (512u << 10);
      } catch (const std::exception&) {
      }
    }
    ASSERT_TRUE(moving) << c.story();
    ASSERT_TRUE(cut());
    const auto t0 = std::chrono::steady_clock::now();
    // The source's own clock (total-time) times the failure: this loop's
    // polling of a silent host may lag behind.
    const auto cut_ms =
      qmp_on("host-a", "query-migrate").at("return").at("total-time").to_number<double>();
    double end_ms = 0;
    const auto since = [t0] {
      return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    };
    std::string status;
    bool target_ran = false;
    while (since() < 20 && ends.count(status) == 0) {
      const auto info = qmp_on("host-a", "query-migrate").at("return");
      const std::string now{info.at("status").as_string()};
      if (now != status)
        std::printf("%.1f s after the cut: source %s %s\n", since(), now.c_str(),
                    info.as_object().contains("error-desc")
                      ? json::serialize(info.at("error-desc")).c_str()
                      : "");
      status = now;
      if (ends.count(status) != 0 && info.as_object().contains("total-time"))
        end_ms = info.at("total-time").to_number<double>();
      target_ran = target_ran || status_on("host-b") == "running";
      std::this_thread::sleep_for(100ms);
    }
    EXPECT_EQ(ends.count(status), 1U) << status << c.story();
    EXPECT_LE(end_ms - cut_ms, 10'500.0) << "the link timeout is 10 s";
    std::printf("the source's migration ended %.1f s after the cut\n", (end_ms - cut_ms) / 1000);
    EXPECT_EQ(status_on("host-a"), "running") << "the source runs on";
    bool settled = false;
    for (int i = 0; i < 150 && !settled; ++i) {
      target_ran = target_ran || status_on("host-b") == "running";
      const auto mv = json::parse(ctl({"migrations", "-o", "json"}).output);
      settled = !mv.as_array().empty() && mv.as_array()[0].at("state").as_string() == "failed";
      if (!settled)
        std::this_thread::sleep_for(200ms);
    }
    EXPECT_TRUE(settled) << c.story();
    if (heal) {
      ASSERT_TRUE(heal());
    }
    bool alone = false; // host-b up again, the guest on host-a only
    for (int i = 0; i < 150 && !alone; ++i) {
      target_ran = target_ran || status_on("host-b") == "running";
      const auto hosts = json::parse(ctl({"hosts", "-o", "json"}).output);
      bool b_up = false;
      for (const auto& h : hosts.as_array())
        b_up = b_up || (h.at("name").as_string() == "host-b" && h.at("up").as_bool());
      alone = b_up && placements()["vm1"] == std::vector<std::string>{"host-a"};
      if (!alone)
        std::this_thread::sleep_for(200ms);
    }
    EXPECT_TRUE(alone) << c.story();
    EXPECT_FALSE(target_ran) << "the destination never ran";
    verify_guest("vm1", "host-a");
  }
};

// The whole host goes silent: the orchestrator's heartbeat notices first
// (5 s) and cancels the migration while settling; or the link timeout
// fails it. Both end it within 10 s.
TEST_F(partition, a_target_host_cut_off_mid_precopy_never_runs_the_guest) {
  if (!c.in_namespaces())
    GTEST_SKIP() << "cutting a link needs network namespaces (root and iproute2)";
  cut_mid_precopy(
    [this] { return c.set_link("host-b", false) && c.set_migration_link("host-b", false); },
    [this] { return c.set_link("host-b", true) && c.set_migration_link("host-b", true); },
    {"failed", "cancelled"});
}

// Only the migration stream goes silent (the control plane still works):
// TCP_USER_TIMEOUT on the source's channels fails the migration by itself.
TEST_F(partition, a_silent_migration_stream_fails_the_source_within_the_link_timeout) {
  if (!c.in_namespaces())
    GTEST_SKIP() << "cutting a link needs network namespaces (root and iproute2)";
  cut_mid_precopy([this] { return c.set_migration_link("host-b", false); },
                  [this] { return c.set_migration_link("host-b", true); }, {"failed"});
}

// The escalation ladder, without KVM: a synthetic guest dirtying 8 MB/s
// over a 4 MiB/s link never converges; the orchestrator doubles
// downtime-limit twice, tries a dirty limit (refused: such a guest has no
// KVM dirty ring), then cancels. Each step is journaled and shown; the
// source guest keeps running, alone.
TEST(cluster_policy, a_migration_that_does_not_converge_climbs_the_ladder_then_is_cancelled) {
  test_cluster c;
  auto err = c.start({"host-a", "host-b"}, "max_bandwidth = 4194304\ndowntime_limit_ms = 10\n"
                                           "escalate_after_passes = 2\ndowntime_steps = 2\n"
                                           "auto_converge_step = false\n");
  ASSERT_TRUE(err.empty()) << err;
  const std::string img = c.dir.file("guest.img");
  ASSERT_EQ(
    run({binary("tools/ferry-testguest"), "image", img, "--ram-top", "8M", "--ws-pages", "512"})
      .status,
    0);
  auto r = c.ctl({"create", "hot", "--host", "host-a", "--memory", "8M", "--accel", "none",
                  "--image", img, "--dirty-rate", "2000"});
  ASSERT_EQ(r.status, 0) << r.output;
  std::this_thread::sleep_for(1500ms);
  auto m = c.ctl({"migrate", "hot", "--to", "host-b", "--wait", "-o", "json"});
  EXPECT_EQ(m.status, 2) << m.output << c.story();
  const auto jobs = json::parse(c.ctl({"migrations", "-o", "json"}).output);
  ASSERT_EQ(jobs.as_array().size(), 1U);
  const auto& job = jobs.as_array()[0].as_object();
  EXPECT_EQ(job.at("state").as_string(), "failed");
  const std::string error{job.at("error").as_string()};
  EXPECT_NE(error.find("did not converge"), std::string::npos) << error;
  EXPECT_NE(error.find("dirty page limit feature requires KVM"), std::string::npos) << error;
  const auto& steps = job.at("steps").as_array();
  ASSERT_EQ(steps.size(), 4U) << json::serialize(steps);
  EXPECT_EQ(std::string{steps[0].as_string()}.rfind("downtime-limit 20 ms", 0), 0U);
  EXPECT_EQ(std::string{steps[1].as_string()}.rfind("downtime-limit 40 ms", 0), 0U);
  EXPECT_EQ(std::string{steps[2].as_string()}.rfind("dirty-limit 1 MiB/s per vCPU", 0), 0U);
  EXPECT_EQ(std::string{steps[3].as_string()}.rfind("cancel", 0), 0U);
  EXPECT_NE(std::string{steps[3].as_string()}.find("dirty-limit refused"), std::string::npos);
  auto where = c.placements();
  EXPECT_EQ(where["hot"], std::vector<std::string>{"host-a"});
}

// The dirty-limit rung with KVM. The guest rewrites an 8 MiB working set as
// fast as its vCPU runs: far too hot for 32 MiB/s and a 25-50 ms downtime
// limit. With auto-converge left out of the ladder, set-vcpu-dirty-limit
// holds its vCPU (dirty ring) to `dirty_limit_mib_s`.
class dirty_limit_rung : public ::testing::Test {
protected:
  void start(const std::string& limit_mib_s) {
    FERRY_REQUIRE_KVM();
    auto err = c.start({"host-a", "host-b"}, "max_bandwidth = 33554432\ndowntime_limit_ms = 25\n"
                                             "escalate_after_passes = 4\ndowntime_steps = 1\n"
                                             "auto_converge_step = false\ndirty_limit_mib_s = " +
                                               limit_mib_s + "\n");
    ASSERT_TRUE(err.empty()) << err;
    const std::string img = c.dir.file("guest.img");
    auto i = run({binary("tools/ferry-testguest"), "image", img, "--ram-top", "16M", "--ws-pages",
                  "2048", "--report-every", "50"});
    ASSERT_EQ(i.status, 0) << i.output;
    auto r = c.ctl({"create", "hot", "--host", "host-a", "--memory", "16M", "--image", img,
                    "--dirty-ring-size", "4096"});
    ASSERT_EQ(r.status, 0) << r.output;
    ASSERT_TRUE(wait_for_text(c.run_dir("host-a") + "/hot.serial", "ready", 120s));
  }
  json::object job() {
    const auto jobs = json::parse(c.ctl({"migrations", "-o", "json"}).output);
    EXPECT_EQ(jobs.as_array().size(), 1U);
    return jobs.as_array().at(0).as_object();
  }
  json::value qmp(const std::string& host, const std::string& cmd) {
    qmp_tool::qmp_client q{c.run_dir(host) + "/hot.qmp"};
    q.negotiate();
    return q.execute(cmd);
  }
  void verify(const std::string& host) { verify_guest_memory(c, "hot", host, 16u << 20); }
  test_cluster c;
};

TEST_F(dirty_limit_rung, brings_a_hot_kvm_guest_over) {
  start("1");
  if (HasFatalFailure() || IsSkipped())
    return;
  auto m = c.ctl({"migrate", "hot", "--to", "host-b", "--wait", "-o", "json"});
  ASSERT_EQ(m.status, 0) << m.output << c.story();
  const auto j = job();
  EXPECT_EQ(j.at("state").as_string(), "succeeded");
  const auto& steps = j.at("steps").as_array();
  ASSERT_EQ(steps.size(), 2U) << json::serialize(steps);
  EXPECT_EQ(std::string{steps[0].as_string()}.rfind("downtime-limit 50 ms", 0), 0U);
  EXPECT_EQ(std::string{steps[1].as_string()}.rfind("dirty-limit 1 MiB/s per vCPU", 0), 0U);
  std::printf("dirty-limit rung: %s\n", json::serialize(j.at("progress")).c_str());
  EXPECT_EQ(c.placements()["hot"], std::vector<std::string>{"host-b"});
  verify("host-b");
}

// A limit too loose to help: the ladder ends in cancel, and the guest stays
// on its source at full speed (the job lifts the limit it set).
TEST_F(dirty_limit_rung, that_does_not_help_is_lifted_when_the_move_is_cancelled) {
  start("65536");
  if (HasFatalFailure() || IsSkipped())
    return;
  auto m = c.ctl({"migrate", "hot", "--to", "host-b", "--wait", "-o", "json"});
  EXPECT_EQ(m.status, 2) << m.output << c.story();
  const auto j = job();
  EXPECT_EQ(j.at("state").as_string(), "failed");
  const std::string error{j.at("error").as_string()};
  EXPECT_NE(error.find("did not converge"), std::string::npos) << error;
  EXPECT_NE(error.find("dirty-limit 65536 MiB/s"), std::string::npos) << error;
  const auto& steps = j.at("steps").as_array();
  ASSERT_EQ(steps.size(), 3U) << json::serialize(steps);
  EXPECT_EQ(std::string{steps[1].as_string()}.rfind("dirty-limit 65536 MiB/s", 0), 0U);
  EXPECT_EQ(std::string{steps[2].as_string()}.rfind("cancel", 0), 0U);
  EXPECT_EQ(c.placements()["hot"], std::vector<std::string>{"host-a"});
  EXPECT_EQ(qmp("host-a", "query-vcpu-dirty-limit").at("return"), json::array{})
    << "the source's vCPUs are free again";
  verify("host-a");
}

} // namespace
} // namespace ferry::test
