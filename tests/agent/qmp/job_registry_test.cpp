// The job status table (QEMU's JobSTT for jobs that finalize themselves and
// wait for job-dismiss): every edge is allowed, every other pair refused;
// a job's run walks created → running → waiting → pending → concluded →
// null, or through aborting when its work fails.

#include "agent/qmp/job_registry.hpp"
#include "common/error.hpp"

#include <boost/json.hpp>
#include <gtest/gtest.h>

#include <chrono>
#include <set>
#include <thread>

using namespace ferry;
namespace json = boost::json;

TEST(job_status, the_table_allows_exactly_qemus_edges) {
  using js = job_status;
  const std::set<std::pair<js, js>> edges = {
    {js::undefined, js::created},  {js::created, js::running},   {js::created, js::aborting},
    {js::running, js::waiting},    {js::running, js::aborting},  {js::waiting, js::pending},
    {js::waiting, js::aborting},   {js::pending, js::concluded}, {js::pending, js::aborting},
    {js::aborting, js::concluded}, {js::concluded, js::null}};
  for (size_t f = 0; f < job_status_count; ++f)
    for (size_t t = 0; t < job_status_count; ++t) {
      const auto from = static_cast<js>(f);
      const auto to = static_cast<js>(t);
      EXPECT_EQ(job_transition_allowed(from, to), edges.count({from, to}) == 1)
        << to_string(from) << " -> " << to_string(to);
    }
  EXPECT_EQ(to_string(js::concluded), "concluded");
}

namespace {

struct registry : ::testing::Test {
  std::mutex m;
  std::vector<std::string> seen;
  job_registry jobs{[this](const std::string& line) {
    const auto ev = json::parse(line);
    std::lock_guard lk{m};
    seen.push_back(std::string{ev.at("data").at("id").as_string()} + ":" +
                   std::string{ev.at("data").at("status").as_string()});
  }};

  json::object wait_concluded(const std::string& id) {
    for (int i = 0; i < 500; ++i) {
      for (const auto& j : jobs.query())
        if (j.at("id").as_string() == id && j.at("status") == "concluded")
          return j.as_object();
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    ADD_FAILURE() << id << " never concluded";
    return {};
  }
};

} // namespace

TEST_F(registry, a_job_that_works_walks_to_concluded_and_is_dismissed) {
  ASSERT_FALSE(jobs.start("ok1", "snapshot-delete", [] { return caf::expected<void>{}; }));
  const auto j = wait_concluded("ok1");
  EXPECT_FALSE(j.contains("error"));
  EXPECT_EQ(j.at("type"), "snapshot-delete");
  EXPECT_EQ(jobs.dismiss("ok1"), std::nullopt);
  EXPECT_EQ(jobs.dismiss("ok1"), "Job not found");
  std::lock_guard lk{m};
  EXPECT_EQ(seen, (std::vector<std::string>{"ok1:created", "ok1:running", "ok1:waiting",
                                            "ok1:pending", "ok1:concluded", "ok1:null"}));
}

TEST_F(registry, a_failing_job_aborts_and_a_running_one_cannot_be_dismissed) {
  std::atomic<bool> release{false};
  ASSERT_FALSE(jobs.start("slow", "snapshot-save", [&] {
    while (!release)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    return caf::expected<void>{make_ferry_error(errc::invalid_argument, "no room")};
  }));
  for (int i = 0; i < 500 && jobs.query().at(0).at("status") != "running"; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  EXPECT_EQ(jobs.dismiss("slow"),
            "Job 'slow' in state 'running' cannot accept command verb 'dismiss'");
  EXPECT_EQ(jobs.id_refusal("slow"), "Job ID 'slow' already in use");
  EXPECT_EQ(jobs.id_refusal("a b"), "Invalid job ID 'a b'");
  EXPECT_EQ(jobs.id_refusal(""), "Invalid job ID ''");
  release = true;
  const auto j = wait_concluded("slow");
  EXPECT_EQ(j.at("error"), "no room");
  std::lock_guard lk{m};
  EXPECT_EQ(seen, (std::vector<std::string>{"slow:created", "slow:running", "slow:aborting",
                                            "slow:concluded"}));
}
