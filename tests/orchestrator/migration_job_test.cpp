// The migration job actor under CAF's test coordinator, against scripted host
// actors (the host_actor interface, whose real implementation the cluster
// process tests drive): every path through the job state machine in
// milliseconds — succeeded, a failing create, a failing migration, a cancel
// mid-migration, a lost host — each checked against the journal's
// transitions and the QMP commands each host saw.

#include "orchestrator/migration_job.hpp"
#include "tests/support/coordinated_fixture.hpp"
#include "tests/support/scripted_host.hpp"

#include <caf/all.hpp>
#include <caf/scheduler/test_coordinator.hpp>

#include <boost/json.hpp>
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <deque>
#include <memory>
#include <string>
#include <vector>

using namespace ferry;
using namespace ferry::test;
namespace json = boost::json;

namespace {

// The job's parent, keeping its final reports. (Spawned with its input as an
// argument: CAF 0.17 binds a null reference for a function spawned without
// any, which UBSan reports.)
job_parent_actor::behavior_type job_parent(job_parent_actor::pointer,
                                           const std::shared_ptr<std::vector<job_record>>& done) {
  return {
    [done](job_done_atom, const job_record& r) { done->push_back(r); },
    [](job_update_atom, const job_record&, const migration_progress&) {},
    [](job_step_atom, const std::string&) {},
  };
}

struct job_fixture : coordinated_fixture {
  std::shared_ptr<host_script> src = std::make_shared<host_script>();
  std::shared_ptr<host_script> dst = std::make_shared<host_script>();
  std::shared_ptr<std::vector<job_record>> done = std::make_shared<std::vector<job_record>>();
  migration_job_actor job;
  host_actor dst_actor;
  migration_policy policy;

  void SetUp() override {
    coordinated_fixture::SetUp();
    src->name = "host-a";
    dst->name = "host-b";
    guest_info g;
    g.spec.name = "vm1";
    g.spec.memory = 64u << 20;
    g.alive = true;
    src->guests.push_back(g);
  }

  void TearDown() override {
    if (job)
      caf::anon_send_exit(job, caf::exit_reason::kill);
    sched->run();
  }

  // Spawns the job for vm1 host-a -> host-b, in scheduling as the cluster
  // hands it over.
  void start() {
    job_record rec;
    rec.guest = "vm1";
    rec.source = "host-a";
    rec.target = "host-b";
    rec.memory = 64u << 20;
    auto added = log->add_job(rec);
    ASSERT_TRUE(added);
    ASSERT_TRUE(log->move(*added, job_state::scheduling, "slot granted"));
    added->state = job_state::scheduling;
    auto parent = sys->spawn(job_parent, done);
    dst_actor = sys->spawn(scripted_host, dst);
    job_context ctx{
      *added, sys->spawn(scripted_host, src), dst_actor, "127.0.0.1", policy, log, parent, false};
    job = spawn_migration_job(*sys, std::move(ctx));
    sched->run();
  }

  // Polls go by the actor clock: fire them until the job ends.
  void run_to_end(size_t max_polls = 50) {
    for (size_t i = 0; i < max_polls && done->empty(); ++i) {
      sched->trigger_timeouts();
      sched->run();
    }
  }

  std::vector<std::string> walk() const {
    std::vector<std::string> out;
    for (const auto& t : log->transitions())
      out.push_back(std::string{to_string(t.from)} + ">" + std::string{to_string(t.to)});
    return out;
  }

  static bool saw(const host_script& h, const std::string& what) {
    return std::find(h.qmp_seen.begin(), h.qmp_seen.end(), what) != h.qmp_seen.end();
  }
};

} // namespace

TEST_F(job_fixture, a_migration_walks_to_succeeded_and_retires_the_source) {
  src->migrate_statuses = {"active", "active", "completed"};
  start();
  run_to_end();
  ASSERT_EQ(done->size(), 1U);
  EXPECT_EQ(done->at(0).state, job_state::succeeded) << done->at(0).error;
  EXPECT_EQ(walk(), (std::vector<std::string>{"pending>scheduling", "scheduling>preparing-target",
                                              "preparing-target>running", "running>completing",
                                              "completing>succeeded"}));
  // The target was set up to listen before the source was told to migrate.
  EXPECT_TRUE(saw(*dst, "vm1:migrate-incoming"));
  EXPECT_TRUE(saw(*src, "vm1:migrate"));
  EXPECT_TRUE(saw(*dst, "vm1:query-status")) << "the target is confirmed running first";
  EXPECT_EQ(src->destroyed, std::vector<std::string>{"vm1"}) << "then the source copy goes";
  EXPECT_TRUE(dst->destroyed.empty());
}

TEST_F(job_fixture, a_failing_create_fails_the_job_and_touches_no_guest) {
  dst->create_fails = true;
  start();
  run_to_end();
  ASSERT_EQ(done->size(), 1U);
  EXPECT_EQ(done->at(0).state, job_state::failed);
  EXPECT_NE(done->at(0).error.find("creating the target guest"), std::string::npos)
    << done->at(0).error;
  EXPECT_EQ(walk(), (std::vector<std::string>{"pending>scheduling", "scheduling>preparing-target",
                                              "preparing-target>failed"}));
  EXPECT_FALSE(saw(*src, "vm1:migrate"));
  EXPECT_TRUE(src->destroyed.empty()) << "the source keeps its guest";
}

TEST_F(job_fixture, a_failed_migration_removes_the_target_and_keeps_the_source) {
  src->migrate_statuses = {"active", "failed"};
  start();
  run_to_end();
  ASSERT_EQ(done->size(), 1U);
  EXPECT_EQ(done->at(0).state, job_state::failed);
  EXPECT_NE(done->at(0).error.find("scripted failure"), std::string::npos) << done->at(0).error;
  EXPECT_EQ(walk(), (std::vector<std::string>{"pending>scheduling", "scheduling>preparing-target",
                                              "preparing-target>running", "running>failed"}));
  EXPECT_EQ(dst->destroyed, std::vector<std::string>{"vm1"}) << "the half-made target goes";
  EXPECT_TRUE(src->destroyed.empty()) << "the source keeps its guest";
}

TEST_F(job_fixture, cancel_mid_migration_cancels_on_the_source_and_removes_the_target) {
  src->migrate_statuses = {"active"};
  start();
  for (int i = 0; i < 3; ++i) {
    sched->trigger_timeouts();
    sched->run();
  }
  ASSERT_TRUE(done->empty());
  src->migrate_statuses = {"cancelled"}; // what the source answers after migrate_cancel
  caf::anon_send(job, cancel_atom::value);
  sched->run();
  EXPECT_TRUE(saw(*src, "vm1:migrate_cancel"));
  run_to_end();
  ASSERT_EQ(done->size(), 1U);
  EXPECT_EQ(done->at(0).state, job_state::cancelled) << done->at(0).error;
  EXPECT_EQ(walk().back(), "running>cancelled");
  EXPECT_EQ(dst->destroyed, std::vector<std::string>{"vm1"});
  EXPECT_TRUE(src->destroyed.empty());
}

// The journal can no longer record the job (here: another writer moved it
// behind the job's back, so its next transition is refused, as a full disk
// would refuse it): a running migration is cancelled on the source, never
// left to complete unrecorded.
TEST_F(job_fixture, a_journal_that_cannot_record_the_job_cancels_its_running_migration) {
  src->migrate_statuses = {"active", "active", "completed"};
  start();
  sched->trigger_timeouts();
  sched->run();
  ASSERT_TRUE(saw(*src, "vm1:migrate"));
  ASSERT_TRUE(done->empty());
  auto rec = log->jobs(true).at(0);
  ASSERT_EQ(rec.state, job_state::running);
  ASSERT_TRUE(log->move(rec, job_state::failed, "another writer"));
  run_to_end();
  ASSERT_EQ(done->size(), 1U);
  EXPECT_NE(done->at(0).error.find("the migration was cancelled (the source keeps running)"),
            std::string::npos)
    << done->at(0).error;
  EXPECT_TRUE(saw(*src, "vm1:migrate_cancel"));
  EXPECT_TRUE(src->destroyed.empty()) << "the source keeps its guest";
}

// An escalation step the journal cannot record (here its table is gone, as
// a damaged file would leave it) is not taken: the migration is cancelled
// and the source runs on.
TEST_F(job_fixture, an_escalation_step_the_journal_cannot_record_cancels_the_migration) {
  policy.escalate_after_passes = 2;
  src->passes_per_poll = 1;
  start();
  sched->trigger_timeouts();
  sched->run();
  ASSERT_TRUE(saw(*src, "vm1:migrate"));
  const auto set_params = [this] {
    return std::count(src->qmp_seen.begin(), src->qmp_seen.end(), "vm1:migrate-set-parameters");
  };
  const auto set_before = set_params();
  {
    sqlite3* raw = nullptr;
    ASSERT_EQ(sqlite3_open((tmp.path() + "/journal.db").c_str(), &raw), SQLITE_OK);
    EXPECT_EQ(sqlite3_exec(raw, "DROP TABLE steps", nullptr, nullptr, nullptr), SQLITE_OK);
    sqlite3_close(raw);
  }
  src->migrate_statuses = {"active", "active", "active", "cancelled"};
  run_to_end();
  ASSERT_EQ(done->size(), 1U);
  EXPECT_EQ(done->at(0).state, job_state::failed);
  EXPECT_NE(done->at(0).error.find("the journal cannot record escalation step 'downtime-limit'"),
            std::string::npos)
    << done->at(0).error;
  EXPECT_TRUE(saw(*src, "vm1:migrate_cancel"));
  EXPECT_EQ(set_params(), set_before) << "the unrecorded step is not taken";
  EXPECT_TRUE(src->destroyed.empty()) << "the source keeps its guest";
  EXPECT_EQ(dst->destroyed, std::vector<std::string>{"vm1"});
}

TEST_F(job_fixture, a_lost_host_fails_the_job_at_once) {
  start();
  sched->trigger_timeouts();
  sched->run();
  caf::anon_send(job, host_lost_atom::value, std::string{"host-b"});
  sched->run();
  run_to_end(5);
  ASSERT_EQ(done->size(), 1U);
  EXPECT_EQ(done->at(0).state, job_state::failed);
  EXPECT_NE(done->at(0).error.find("host host-b went down"), std::string::npos)
    << done->at(0).error;
  EXPECT_TRUE(src->destroyed.empty()) << "the source keeps its guest";
}

TEST_F(job_fixture, cancel_while_the_target_is_created_ends_cancelled_without_it) {
  dst->hold_create = true;
  start();
  EXPECT_EQ(walk().back(), "scheduling>preparing-target");
  caf::anon_send(job, cancel_atom::value);
  sched->run();
  EXPECT_TRUE(done->empty()) << "the create is still under way";
  caf::anon_send(dst_actor, capacity_atom::value); // releases the held create
  sched->run();
  run_to_end();
  ASSERT_EQ(done->size(), 1U);
  EXPECT_EQ(done->at(0).state, job_state::cancelled) << done->at(0).error;
  EXPECT_EQ(walk().back(), "preparing-target>cancelled");
  EXPECT_EQ(dst->destroyed, std::vector<std::string>{"vm1"}) << "the new target goes";
  EXPECT_FALSE(saw(*src, "vm1:migrate"));
  EXPECT_TRUE(src->destroyed.empty());
}
