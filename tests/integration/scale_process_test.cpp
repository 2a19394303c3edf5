// Orchestration at scale, without KVM: 200 `-accel none` guests across 10
// agent processes on this machine; two hosts are evacuated at once. Checks,
// from the orchestrator's journal, that the concurrency limits (cluster 5,
// outbound 2 and inbound 2 per host) were never exceeded, that every guest
// runs exactly once and none is left on the drained hosts; reports the
// orchestration overhead per migration (job wall time minus the migration's
// own total-time) and holds its median to a regression bound.

#include "orchestrator/journal.hpp"
#include "tests/support/process.hpp"
#include "tests/support/test_cluster.hpp"

#include <boost/json.hpp>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <map>
#include <set>
#include <thread>
#include <vector>

namespace ferry::test {
namespace {

namespace json = boost::json;
using namespace std::chrono_literals;

// FERRY_SCALE_HOSTS / FERRY_SCALE_GUESTS shrink the run while debugging;
// FERRY_SCALE_STORY=1 prints every process's log at the end.
int env_or(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return v != nullptr ? std::atoi(v) : fallback;
}
const int host_count = env_or("FERRY_SCALE_HOSTS", 10);
const int guests_per_host = env_or("FERRY_SCALE_GUESTS", 20);

double median(std::vector<double> v) {
  if (v.empty())
    return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

std::string host_name(int i) {
  std::string n = std::to_string(i);
  return "host-" + std::string(n.size() < 2 ? 2 - n.size() : 0, '0') + n;
}

// One evacuation on a fresh cluster, checked; the orchestration overhead
// per move (median ms) in `overhead`.
void evacuate_two_hosts(double& overhead) {
  test_cluster c;
  std::vector<std::string> hosts;
  hosts.reserve(static_cast<size_t>(host_count));
  for (int i = 0; i < host_count; ++i)
    hosts.push_back(host_name(i));
  auto err = c.start(hosts);
  ASSERT_TRUE(err.empty()) << err;
  for (int h = 0; h < host_count; ++h)
    for (int g = 0; g < guests_per_host; ++g) {
      const std::string name = "s" + std::to_string(h) + "-" + std::to_string(g);
      // Quiet guests (100 pages/s): 200 flat-out dirtiers would only
      // measure how 2 cores share out.
      auto r = c.ctl({"create", name, "--host", host_name(h), "--memory", "4M", "--accel", "none",
                      "--dirty-rate", "100", "--priority", std::to_string(g % 3)});
      ASSERT_EQ(r.status, 0) << name << ": " << r.output;
    }
  auto before = c.placements();
  ASSERT_EQ(before.size(), static_cast<size_t>(host_count * guests_per_host));

  const auto t0 = std::chrono::steady_clock::now();
  for (const auto& drained : {host_name(0), host_name(1)}) {
    auto r = c.ctl({"evacuate", drained, "-o", "json"});
    ASSERT_EQ(r.status, 0) << r.output;
  }
  auto w = c.ctl({"watch", "-o", "json"});
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_TRUE(w.status == 0 || w.status == 2) << c.story();

  // Every guest accounted for: each runs exactly once, none on a drained host.
  auto after = c.placements();
  ASSERT_EQ(after.size(), before.size()) << c.story();
  for (const auto& [name, where] : after) {
    ASSERT_EQ(where.size(), 1U) << name << " runs " << where.size() << " times";
    EXPECT_NE(where[0], host_name(0)) << name;
    EXPECT_NE(where[0], host_name(1)) << name;
  }

  // The limits, replayed from the journal: a job holds a slot from
  // scheduling until it reaches a final state.
  auto log = journal::open_for_reading(c.journal_path());
  ASSERT_TRUE(log);
  std::map<int64_t, job_record> jobs;
  for (const auto& j : (*log)->jobs(false))
    jobs[j.id] = j;
  std::set<int64_t> active;
  size_t peak = 0;
  std::map<std::string, size_t> peak_out, peak_in;
  std::map<int64_t, double> started, ended;
  for (const auto& t : (*log)->transitions()) {
    if (t.to == job_state::scheduling) {
      active.insert(t.job);
      started[t.job] = t.at;
    }
    if (job_is_final(t.to)) {
      active.erase(t.job);
      ended[t.job] = t.at;
    }
    std::map<std::string, size_t> out, in;
    for (auto id : active) {
      ++out[jobs[id].source];
      ++in[jobs[id].target];
    }
    peak = std::max(peak, active.size());
    for (auto& [h, n] : out)
      peak_out[h] = std::max(peak_out[h], n);
    for (auto& [h, n] : in)
      peak_in[h] = std::max(peak_in[h], n);
  }
  EXPECT_LE(peak, 5U);
  EXPECT_GE(peak, 4U) << "two drained hosts with 2 outbound slots each should run 4 at once";
  for (auto& [h, n] : peak_out)
    EXPECT_LE(n, 2U) << h;
  for (auto& [h, n] : peak_in)
    EXPECT_LE(n, 2U) << h;

  // Orchestration overhead per move: the job's wall time (slot granted to
  // final state) beyond the migration's own total-time as the source
  // reported it; and where it goes, per state.
  const auto final_view = json::parse(c.ctl({"migrations", "-o", "json"}).output);
  std::vector<double> overheads;
  std::vector<double> migrating;
  std::map<int64_t, double> total_of;
  for (const auto& m : final_view.as_array()) {
    const auto& o = m.as_object();
    if (o.at("state").as_string() != "succeeded")
      continue;
    const auto id = o.at("id").to_number<int64_t>();
    const double total_ms = o.at("progress").at("total-time").to_number<double>();
    overheads.push_back((ended[id] - started[id]) * 1000 - total_ms);
    migrating.push_back(total_ms);
    total_of[id] = total_ms;
  }
  // At least one move per guest of the drained hosts (a guest that reached
  // the second host before it began draining moves twice).
  ASSERT_GE(overheads.size(), static_cast<size_t>(2 * guests_per_host)) << c.story();
  std::map<job_state, std::vector<double>> in_state;
  std::map<int64_t, std::pair<job_state, double>> entered;
  std::vector<double> running_beyond; // running, less the source's own total-time
  size_t ahead = 0;                   // moves whose sides were readied while they waited for a slot
  for (const auto& t : (*log)->transitions()) {
    if (t.to == job_state::preparing_target && t.note.find("while waiting") != std::string::npos)
      ++ahead;
    if (auto it = entered.find(t.job); it != entered.end() && !job_is_final(it->second.first)) {
      const double ms = (t.at - it->second.second) * 1000;
      in_state[it->second.first].push_back(ms);
      if (it->second.first == job_state::running && total_of.count(t.job) != 0)
        running_beyond.push_back(ms - total_of[t.job]);
    }
    entered[t.job] = {t.to, t.at};
  }
  std::cout << "scale: " << overheads.size() << " migrations in " << wall << " s, peak " << peak
            << " at once; per move (median): " << median(migrating) << " ms migrating + "
            << median(overheads) << " ms orchestration\n  time in each state (median ms):";
  for (auto& [state, ms] : in_state)
    std::cout << " " << to_string(state) << " " << median(ms);
  std::cout << "; running beyond the migration's total-time " << median(running_beyond);
  std::cout << "\n  " << ahead << " of " << overheads.size()
            << " moves were prepared while they waited for a slot\n";
  // Waiting moves are readied ahead (policy prepare_ahead): most must be.
  EXPECT_GE(ahead * 2, overheads.size());
  if (std::getenv("FERRY_SCALE_STORY") != nullptr) // every process's log, while debugging
    std::cout << c.story();
  overhead = median(overheads);
}

TEST(scale, two_hundred_guests_ten_agents_two_hosts_evacuated_within_the_limits) {
  double overhead = 0;
  evacuate_two_hosts(overhead);
  if (HasFatalFailure())
    return;
  // What the orchestrator adds to a move. The aim is a median under 50 ms;
  // on 2 loaded cores a run lands between about 30 and 80 ms, or 50 and
  // 110 ms on a machine without KVM, where faults and wake-ups cost more
  // (docs/orchestrator.md, "Measured"), so the test fails only where it
  // doubles — a step back to polling or to creating targets only once a slot
  // frees. A shared machine stalls now and then (one run in ten took twice
  // as long throughout): above the bound, a second evacuation on a fresh
  // cluster decides; a regression fails both. Sanitized builds run several
  // times slower and only report it.
  constexpr double bound_ms = 100;
  if (FERRY_SANITIZED == 0 && overhead >= bound_ms) {
    std::cout << "orchestration median " << overhead << " ms is above " << bound_ms
              << " ms: measuring once more on a fresh cluster\n";
    evacuate_two_hosts(overhead);
    if (HasFatalFailure())
      return;
  }
  if (FERRY_SANITIZED == 0) {
    EXPECT_LT(overhead, bound_ms) << "orchestration overhead per move (median ms)";
  }
  RecordProperty("orchestration_overhead_median_ms", std::to_string(overhead));
}

} // namespace
} // namespace ferry::test
