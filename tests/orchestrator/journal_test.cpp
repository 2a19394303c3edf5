#include "orchestrator/journal.hpp"

#include "common/error.hpp"
#include "tests/support/temp_dir.hpp"

#include <gtest/gtest.h>

#include <unistd.h>

#include <cstdio>

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

// Two orchestrators on one journal would each resume the other's jobs.
TEST(journal, pairs_follow_their_table_and_survive_a_reopen) {
  test::temp_dir dir;
  const auto path = dir.file("journal.db");
  {
    auto log = journal::open(path);
    ASSERT_TRUE(log) << describe(log.error());
    pair_record p;
    p.guest = "vm1";
    p.primary = "host-a";
    p.secondary = "host-b";
    auto pair = (*log)->add_pair(p);
    ASSERT_TRUE(pair) << describe(pair.error());
    EXPECT_EQ(pair->state, pair_state::protecting);
    auto twice = (*log)->add_pair(p);
    ASSERT_FALSE(twice);
    EXPECT_NE(describe(twice.error()).find("already has a COLO pair"), std::string::npos);
    ASSERT_TRUE((*log)->move_pair(*pair, pair_state::protected_, "both in colo"));
    pair->state = pair_state::protected_;
    // A failover: the secondary's host runs the guest now.
    ASSERT_TRUE((*log)->move_pair(*pair, pair_state::failing_over, "host-a lost"));
    pair->state = pair_state::failing_over;
    pair->primary = "host-b";
    pair->secondary.clear();
    pair->failovers = 1;
    pair->error = "host-a lost";
    ASSERT_TRUE((*log)->move_pair(*pair, pair_state::unprotected, "runs on host-b"));
    pair->state = pair_state::unprotected;
    auto refused = (*log)->move_pair(*pair, pair_state::protected_, "skipping a step");
    ASSERT_FALSE(refused);
    EXPECT_NE(describe(refused.error()).find("cannot move unprotected -> protected"),
              std::string::npos);
    // Stale: the journal holds it unprotected, not protected.
    auto stale = *pair;
    stale.state = pair_state::protected_;
    EXPECT_FALSE((*log)->move_pair(stale, pair_state::unprotected, "stale"));
  }
  auto log = journal::open(path);
  ASSERT_TRUE(log) << describe(log.error());
  const auto open = (*log)->pairs(true);
  ASSERT_EQ(open.size(), 1U);
  EXPECT_EQ(open[0].guest, "vm1");
  EXPECT_EQ(open[0].primary, "host-b");
  EXPECT_EQ(open[0].secondary, "");
  EXPECT_EQ(open[0].state, pair_state::unprotected);
  EXPECT_EQ(open[0].failovers, 1);
  EXPECT_EQ(open[0].error, "host-a lost");
  const auto steps = (*log)->pair_history();
  ASSERT_EQ(steps.size(), 3U);
  EXPECT_EQ(steps[1].to, pair_state::failing_over);
  EXPECT_EQ(steps[1].note, "host-a lost");
  ASSERT_TRUE((*log)->move_pair(open[0], pair_state::ended, "unprotect"));
  EXPECT_TRUE((*log)->pairs(true).empty());
  EXPECT_EQ((*log)->pairs(false).size(), 1U);
  pair_record again;
  again.guest = "vm1";
  again.primary = "host-b";
  EXPECT_TRUE((*log)->add_pair(again)) << "an ended pair does not block a new one";
}

TEST(journal, a_journal_in_use_is_refused_and_free_again_once_closed) {
  test::temp_dir dir;
  const auto path = dir.file("j.db");
  auto first = journal::open(path);
  ASSERT_TRUE(first) << describe(first.error());
  ASSERT_TRUE((*first)->add_job(sample("vm1")));
  auto second = journal::open(path);
  ASSERT_FALSE(second);
  EXPECT_EQ(describe(second.error()),
            "journal: '" + path + "' is in use by another orchestrator (pid " +
              std::to_string(::getpid()) + "); two must never share one journal");
  // A reader (a tool, a test) may still look while it is held.
  auto reader = journal::open_for_reading(path);
  ASSERT_TRUE(reader) << describe(reader.error());
  EXPECT_EQ((*reader)->jobs(true).size(), 1U);
  first->reset();
  EXPECT_TRUE(journal::open(path)) << "the lock goes with the journal";
}

// A damaged journal could drop unfinished jobs from the resume list: the
// orchestrator refuses it instead of starting without them.
TEST(journal, a_damaged_journal_is_refused_with_what_to_do) {
  test::temp_dir dir;
  const auto path = dir.file("j.db");
  {
    auto log = journal::open(path);
    ASSERT_TRUE(log);
    for (int i = 0; i < 200; ++i)
      ASSERT_TRUE((*log)->add_job(sample("vm" + std::to_string(i))));
  }
  // Garbage over pages 2 and 3 (the jobs table; page 1 holds the header
  // and the schema), as a torn write or a bad disk leaves them.
  {
    std::FILE* f = std::fopen(path.c_str(), "r+b");
    ASSERT_NE(f, nullptr);
    ASSERT_EQ(std::fseek(f, 4096, SEEK_SET), 0);
    const std::string junk(8192, '\x5a');
    ASSERT_EQ(std::fwrite(junk.data(), 1, junk.size(), f), junk.size());
    std::fclose(f);
  }
  auto log = journal::open(path);
  ASSERT_FALSE(log);
  const auto why = describe(log.error());
  EXPECT_EQ(why.rfind("journal: ", 0), 0U) << why;
  EXPECT_TRUE(why.find("damaged") != std::string::npos ||
              why.find("malformed") != std::string::npos)
    << why;
}

TEST(journal, an_unopenable_path_is_a_clear_error) {
  auto log = journal::open("/nonexistent/dir/j.db");
  ASSERT_FALSE(log);
  EXPECT_NE(describe(log.error()).find("cannot open '/nonexistent/dir/j.db'"), std::string::npos);
}

} // namespace
} // namespace ferry
