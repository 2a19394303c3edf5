#include "orchestrator/journal.hpp"

#include "common/error.hpp"
#include "tests/support/temp_dir.hpp"

#include <gtest/gtest.h>

namespace ferry {
namespace {

job_record sample(const std::string& guest) {
  job_record j;
  j.guest = guest;
  j.source = "host-a";
  j.target = "host-b";
  j.memory = 64 << 20;
  return j;
}

TEST(journal, records_transitions_and_survives_a_reopen) {
  test::temp_dir dir;
  const auto path = dir.file("journal.db");
  int64_t id = 0;
  {
    auto log = journal::open(path);
    ASSERT_TRUE(log) << describe(log.error());
    auto job = (*log)->add_job(sample("vm1"));
    ASSERT_TRUE(job);
    EXPECT_EQ(job->state, job_state::pending);
    id = job->id;
    ASSERT_TRUE((*log)->move(*job, job_state::scheduling, "slot"));
    job->state = job_state::scheduling;
    job->target = "host-c";
    ASSERT_TRUE((*log)->move(*job, job_state::preparing_target, "create"));
    auto done = (*log)->add_job(sample("vm2"));
    ASSERT_TRUE(done);
    ASSERT_TRUE((*log)->move(*done, job_state::cancelled, "by request"));
  }
  auto log = journal::open(path);
  ASSERT_TRUE(log);
  auto open_jobs = (*log)->jobs(true);
  ASSERT_EQ(open_jobs.size(), 1U);
  EXPECT_EQ(open_jobs[0].id, id);
  EXPECT_EQ(open_jobs[0].state, job_state::preparing_target);
  EXPECT_EQ(open_jobs[0].target, "host-c");
  EXPECT_EQ((*log)->jobs(false).size(), 2U);
  auto t = (*log)->transitions();
  ASSERT_EQ(t.size(), 3U);
  EXPECT_EQ(t[1].from, job_state::scheduling);
  EXPECT_EQ(t[1].to, job_state::preparing_target);
  EXPECT_EQ(t[1].note, "create");
  EXPECT_GT(t[1].at, 1.7e9);
}

TEST(journal, refuses_an_edge_the_state_machine_forbids_and_a_stale_state) {
  test::temp_dir dir;
  auto log = journal::open(dir.file("j.db"));
  ASSERT_TRUE(log);
  auto job = (*log)->add_job(sample("vm1"));
  ASSERT_TRUE(job);
  auto bad = (*log)->move(*job, job_state::succeeded, "skip ahead");
  ASSERT_FALSE(bad);
  EXPECT_NE(describe(bad.error()).find("cannot move pending -> succeeded"), std::string::npos);
  ASSERT_TRUE((*log)->move(*job, job_state::scheduling, ""));
  // The caller's copy still says pending: the journal row does not, so the
  // write is refused rather than recording a transition from a stale state.
  EXPECT_FALSE((*log)->move(*job, job_state::scheduling, "again"));
  EXPECT_EQ((*log)->transitions().size(), 1U);
}

TEST(journal, evacuations_are_open_until_finished) {
  test::temp_dir dir;
  auto log = journal::open(dir.file("j.db"));
  ASSERT_TRUE(log);
  auto e = (*log)->add_evacuation("host-a");
  ASSERT_TRUE(e);
  EXPECT_EQ((*log)->evacuations(true).size(), 1U);
  ASSERT_TRUE((*log)->finish_evacuation(e->id));
  EXPECT_TRUE((*log)->evacuations(true).empty());
  EXPECT_EQ((*log)->evacuations(false).size(), 1U);
}

TEST(journal, an_unopenable_path_is_a_clear_error) {
  auto log = journal::open("/nonexistent/dir/j.db");
  ASSERT_FALSE(log);
  EXPECT_NE(describe(log.error()).find("cannot open '/nonexistent/dir/j.db'"), std::string::npos);
}

} // namespace
} // namespace ferry
