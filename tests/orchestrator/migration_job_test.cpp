// The migration job actor under CAF's test coordinator, against scripted host
// actors (the host_actor interface, whose real implementation the cluster
// process tests drive): every path through the job state machine in
// milliseconds — succeeded, a failing create, a failing migration, a cancel
// mid-migration, a lost host — each checked against the journal's
// transitions and the QMP commands each host saw; and a job in postcopy,
// which recovers a pause on its own and never cancels.

#include "orchestrator/migration_job.hpp"
#include "tests/support/coordinated_fixture.hpp"
#include "tests/support/scripted_host.hpp"

#include <caf/all.hpp>
#include <caf/scheduler/test_coordinator.hpp>

#include <boost/json.hpp>
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <deque>
#include <initializer_list>
#include <memory>
#include <string>
#include <utility>
#include <vector>

using namespace ferry;
using namespace ferry::test;
namespace json = boost::json;

namespace {

// The job's parent, keeping its final reports. (Spawned with its input as an
// argument: CAF 0.17 binds a null reference for a function spawned without
// any, which UBSan reports.)
// A staged job that gives up says so with its id (kept in `dropped`).
job_parent_actor::behavior_type job_parent(job_parent_actor::pointer,
                                           std::shared_ptr<std::vector<job_record>> done,
                                           std::shared_ptr<std::vector<int64_t>> dropped) {
  return {
    [done = std::move(done)](job_done_atom, const job_record& r) { done->push_back(r); },
    [](job_update_atom, const job_record&, const migration_progress&) {},
    [](job_step_atom, const std::string&) {},
    [dropped = std::move(dropped)](stage_dropped_atom, int64_t id) { dropped->push_back(id); },
  };
}

struct job_fixture : coordinated_fixture {
  std::shared_ptr<host_script> src = std::make_shared<host_script>();
  std::shared_ptr<host_script> dst = std::make_shared<host_script>();
  std::shared_ptr<std::vector<job_record>> done = std::make_shared<std::vector<job_record>>();
  std::shared_ptr<std::vector<int64_t>> dropped = std::make_shared<std::vector<int64_t>>();
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

  job_record pending_job;

  // vm1's 64 MiB move host-a -> host-b, as a new journal record.
  static job_record vm1_move() {
    job_record rec;
    rec.guest = "vm1";
    rec.source = "host-a";
    rec.target = "host-b";
    rec.memory = 64u << 20;
    return rec;
  }

  // Spawns the job for vm1 host-a -> host-b, in scheduling as the cluster
  // hands it over; `staged`: still pending, as the cluster stages a move
  // that waits for its slot (grant() is its go).
  void start(bool staged = false) {
    auto added = log->add_job(vm1_move());
    ASSERT_TRUE(added);
    pending_job = *added;
    if (!staged) {
      ASSERT_TRUE(log->move(*added, job_state::scheduling, "slot granted"));
      added->state = job_state::scheduling;
    }
    auto parent = sys->spawn(job_parent, done, dropped);
    dst_actor = sys->spawn(scripted_host, dst);
    job_context ctx{
      *added, sys->spawn(scripted_host, src), dst_actor, "127.0.0.1", policy, log, parent, false,
      staged};
    job = spawn_migration_job(*sys, std::move(ctx));
    sched->run();
  }

  // The cluster grants a staged job its slot: journals scheduling, says go.
  void grant() {
    ASSERT_TRUE(log->move(pending_job, job_state::scheduling, "slot granted"));
    caf::anon_send(job, go_atom::value);
    sched->run();
  }

  // The target's, then the source's MIGRATION completed event. (Events
  // come from the hosts the job subscribed to, outside its public
  // interface.)
  void send_completed_events() {
    const std::string completed = R"({"event":"MIGRATION","data":{"status":"completed"}})";
    const auto as_subscriber = caf::actor_cast<caf::actor>(job);
    for (const char* host : {"host-b", "host-a"})
      caf::anon_send(as_subscriber, qmp_event_atom::value, std::string{host}, std::string{"vm1"},
                     completed);
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

  // vm1's job as the journal left it before an orchestrator restart: moved
  // through `states`, with `steps` taken.
  job_record journaled(std::initializer_list<job_state> states,
                       std::initializer_list<const char*> steps = {}) {
    job_record rec = vm1_move();
    auto added = log->add_job(rec);
    EXPECT_TRUE(added);
    if (!added)
      return rec;
    for (auto to : states) {
      EXPECT_TRUE(log->move(*added, to, "before the restart"));
      added->state = to;
    }
    for (const char* step : steps)
      EXPECT_TRUE(log->add_step(added->id, step));
    return *added;
  }

  // The job spawned as a restarted orchestrator spawns it: resuming.
  void resume(const job_record& rec) {
    auto parent = sys->spawn(job_parent, done, dropped);
    dst_actor = sys->spawn(scripted_host, dst);
    job_context ctx{
      rec, sys->spawn(scripted_host, src), dst_actor, "127.0.0.1", policy, log, parent, true};
    job = spawn_migration_job(*sys, std::move(ctx));
    sched->run();
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
  EXPECT_TRUE(saw(*dst, "vm1:query-migrate")) << "the target is confirmed complete first";
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

// A target of vm1 left on host-b by an earlier attempt (prepared ahead
// before an orchestrator restart) that never received the guest: it goes,
// and the move creates its own.
TEST_F(job_fixture, a_leftover_target_that_never_ran_is_replaced) {
  guest_info leftover;
  leftover.spec = src->guests.at(0).spec;
  leftover.spec.incoming = true;
  dst->guests.push_back(leftover);
  dst->incoming_statuses = {"setup", "completed"};
  src->migrate_statuses = {"active", "completed"};
  start();
  run_to_end();
  ASSERT_EQ(done->size(), 1U);
  EXPECT_EQ(done->at(0).state, job_state::succeeded) << done->at(0).error;
  EXPECT_EQ(dst->destroyed, std::vector<std::string>{"vm1"}) << "the leftover, once";
  EXPECT_EQ(src->destroyed, std::vector<std::string>{"vm1"}) << "the source copy after the move";
}

// One whose incoming migration completed is the guest itself: untouched,
// and the move fails.
TEST_F(job_fixture, a_target_that_holds_the_arrived_guest_is_not_replaced) {
  guest_info arrived;
  arrived.spec = src->guests.at(0).spec;
  arrived.spec.incoming = true;
  dst->guests.push_back(arrived);
  dst->incoming_statuses = {"completed"};
  start();
  run_to_end();
  ASSERT_EQ(done->size(), 1U);
  EXPECT_EQ(done->at(0).state, job_state::failed);
  EXPECT_NE(done->at(0).error.find("already exists"), std::string::npos) << done->at(0).error;
  EXPECT_TRUE(dst->destroyed.empty());
  EXPECT_TRUE(src->destroyed.empty());
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
  src->migrate_statuses = {"active", "cancelled"}; // cancelled once migrate_cancel is in
  caf::anon_send(job, host_lost_atom::value, std::string{"host-b"});
  sched->run();
  run_to_end(5);
  ASSERT_EQ(done->size(), 1U);
  EXPECT_EQ(done->at(0).state, job_state::failed);
  EXPECT_NE(done->at(0).error.find("host host-b went down"), std::string::npos)
    << done->at(0).error;
  EXPECT_TRUE(src->destroyed.empty()) << "the source keeps its guest";
  EXPECT_TRUE(saw(*src, "vm1:migrate_cancel")) << "the source's migration was ended first";
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

// ---------------------------------------------------------------------------
// The hand-over invariant (docs/orchestrator.md): at most one copy runs, and
// no copy that may be the only one is destroyed. Each case ends the job at
// a different moment of the hand-over, with hosts answering or not.

namespace {

struct handover_fixture : job_fixture {
  std::shared_ptr<std::vector<std::string>> trail = std::make_shared<std::vector<std::string>>();

  void SetUp() override {
    job_fixture::SetUp();
    src->trail = trail;
    dst->trail = trail;
  }

  // Runs until the source has completed and the job is completing. With
  // `judge_at_once` the target gets one look and is then judged (its
  // incoming statuses are the test's, set before); without, the job keeps
  // asking it (it answers "active") until the test changes something.
  void run_to_completing(bool judge_at_once) {
    policy.handover_timeout_ms = judge_at_once ? 0 : 600'000;
    src->migrate_statuses = {"active", "completed"};
    if (!judge_at_once)
      dst->incoming_statuses = {"active"};
    start();
    for (int i = 0; i < 10 && !reached("running>completing"); ++i) {
      sched->trigger_timeouts();
      sched->run();
    }
    ASSERT_TRUE(reached("running>completing"));
  }

  bool reached(const std::string& edge) const {
    const auto w = walk();
    return std::find(w.begin(), w.end(), edge) != w.end();
  }

  // The source's host is cut off and the cluster says so.
  void lose_source() {
    src->unreachable = true;
    caf::anon_send(job, host_lost_atom::value, std::string{"host-a"});
    sched->run();
  }

  // The job running (one poll done) while the target says `incoming`,
  // then the source is lost.
  void lose_source_while_running(const std::string& incoming) {
    src->migrate_statuses = {"active"};
    dst->incoming_statuses = {incoming};
    start();
    sched->trigger_timeouts();
    sched->run();
    lose_source();
  }

  size_t index_of(const std::string& what) const {
    const auto it = std::find(trail->begin(), trail->end(), what);
    return it == trail->end() ? SIZE_MAX : static_cast<size_t>(it - trail->begin());
  }

  bool held_because(const std::string& part) const {
    for (const auto& s : log->steps())
      if (s.step.rfind("hold: ", 0) == 0 && s.step.find(part) != std::string::npos)
        return true;
    return false;
  }
};

} // namespace

// The source handed over; the target's go never came (it stays active):
// the target is fenced, the source takes the guest back, and only then the
// target's copy goes (the other order loses the guest if the source dies in
// between: tools/model/handover.pml).
TEST_F(handover_fixture, a_target_without_go_is_fenced_and_destroyed_before_the_source_resumes) {
  dst->incoming_statuses = {"active", "failed"}; // failed once fenced
  run_to_completing(true);
  run_to_end();
  ASSERT_EQ(done->size(), 1U);
  EXPECT_EQ(done->at(0).state, job_state::failed);
  EXPECT_NE(done->at(0).error.find("did not complete the hand-over"), std::string::npos)
    << done->at(0).error;
  const auto fence = index_of("host-b:migrate_cancel");
  const auto destroy = index_of("host-b:destroy");
  const auto cont = index_of("host-a:cont");
  ASSERT_NE(fence, SIZE_MAX);
  ASSERT_NE(destroy, SIZE_MAX);
  ASSERT_NE(cont, SIZE_MAX);
  EXPECT_LT(fence, cont) << "the target can never run when the source resumes";
  EXPECT_LT(cont, destroy) << "the target's copy goes once the source holds the guest";
  EXPECT_TRUE(src->destroyed.empty()) << "the source keeps the guest";
}

// The fence came too late: the go had arrived, the target is the guest.
TEST_F(handover_fixture, a_target_that_completed_before_the_fence_is_the_guest) {
  dst->incoming_statuses = {"active", "completed"};
  run_to_completing(true);
  run_to_end();
  ASSERT_EQ(done->size(), 1U);
  EXPECT_EQ(done->at(0).state, job_state::succeeded) << done->at(0).error;
  EXPECT_TRUE(dst->destroyed.empty());
  EXPECT_EQ(src->destroyed, std::vector<std::string>{"vm1"}) << "the stale source copy goes";
  EXPECT_FALSE(saw(*src, "vm1:cont")) << "never two running copies";
}

// The issue's case: the source host dies after the target got go, before
// the orchestrator confirmed it. The target is the only copy: kept.
TEST_F(handover_fixture, a_source_lost_after_go_leaves_the_target_as_the_guest) {
  run_to_completing(false);
  dst->incoming_statuses = {"completed"};
  lose_source();
  run_to_end();
  ASSERT_EQ(done->size(), 1U);
  EXPECT_EQ(done->at(0).state, job_state::succeeded) << done->at(0).error;
  EXPECT_TRUE(dst->destroyed.empty()) << "the only copy is never destroyed";
  EXPECT_EQ(walk().back(), "completing>succeeded");
}

// The source is lost and the target has not completed: the target may hold
// the only copy, or the source may run on behind a partition. The job
// waits, says so, and destroys nothing; when the source answers again
// (here: its migration failed, it runs the guest) it settles.
TEST_F(handover_fixture, a_lost_source_mid_migration_keeps_the_target_until_the_source_answers) {
  lose_source_while_running("active");
  run_to_end(10);
  EXPECT_TRUE(done->empty()) << "it cannot know, so it waits";
  EXPECT_TRUE(dst->destroyed.empty());
  EXPECT_TRUE(held_because("the source does not answer"));
  src->unreachable = false;
  src->migrate_statuses = {"failed"};
  run_to_end();
  ASSERT_EQ(done->size(), 1U);
  EXPECT_EQ(done->at(0).state, job_state::failed);
  EXPECT_EQ(dst->destroyed, std::vector<std::string>{"vm1"}) << "now known to be a stale copy";
  EXPECT_TRUE(src->destroyed.empty());
}

// Neither host answers after the source handed over: both copies stay
// paused, nothing is destroyed or resumed. Then the hosts return and the
// target turns out to hold the guest.
TEST_F(handover_fixture, when_neither_host_answers_the_job_waits_and_touches_nothing) {
  run_to_completing(false);
  src->unreachable = true;
  dst->unreachable = true;
  run_to_end(10);
  EXPECT_TRUE(done->empty());
  EXPECT_TRUE(held_because("neither host answers"));
  EXPECT_TRUE(dst->destroyed.empty());
  EXPECT_TRUE(src->destroyed.empty());
  EXPECT_FALSE(saw(*src, "vm1:cont"));
  src->unreachable = false;
  dst->unreachable = false;
  dst->incoming_statuses = {"completed"};
  run_to_end();
  ASSERT_EQ(done->size(), 1U);
  EXPECT_EQ(done->at(0).state, job_state::succeeded) << done->at(0).error;
  EXPECT_TRUE(dst->destroyed.empty());
}

// The source handed over and the target host is cut off: the source must
// not resume (the target may be running it), so it stays paused.
TEST_F(handover_fixture, a_silent_target_after_the_hand_over_keeps_the_source_paused) {
  run_to_completing(false);
  dst->unreachable = true;
  run_to_end(10);
  EXPECT_TRUE(done->empty());
  EXPECT_FALSE(saw(*src, "vm1:cont"));
  EXPECT_TRUE(held_because("target host does not answer"));
  dst->unreachable = false;
  dst->incoming_statuses = {"failed"};
  run_to_end();
  ASSERT_EQ(done->size(), 1U);
  EXPECT_EQ(done->at(0).state, job_state::failed);
  EXPECT_LT(index_of("host-b:migrate_cancel"), index_of("host-a:cont"));
  EXPECT_LT(index_of("host-a:cont"), index_of("host-b:destroy"));
}

// The source dies after the target was fenced, before it took the guest
// back: the target's paused copy is now the only one. It is kept.
TEST_F(handover_fixture, a_source_lost_before_it_takes_the_guest_back_leaves_the_target_copy) {
  dst->incoming_statuses = {"active", "failed"};
  src->cut_at = "cont";
  run_to_completing(true);
  run_to_end(10);
  EXPECT_TRUE(done->empty()) << "it cannot know more: it waits";
  EXPECT_TRUE(dst->destroyed.empty()) << "the only copy is never destroyed";
  EXPECT_TRUE(held_because("the source does not take the guest back"));
}

// An orchestrator restarted between cont and destroy finds the source
// running again after its hand-over: it took the guest back, so the fenced
// target goes without a second fence and without a second cont.
TEST_F(handover_fixture, after_a_restart_a_source_running_again_keeps_the_guest) {
  policy.handover_timeout_ms = 0;
  src->migrate_statuses = {"completed"}; // handed over, then resumed by cont
  src->target_status = "running";
  dst->incoming_statuses = {"failed"}; // fenced before the restart
  guest_info fenced;
  fenced.spec.name = "vm1";
  fenced.spec.incoming = true;
  dst->guests.push_back(fenced);
  resume(journaled({job_state::scheduling, job_state::preparing_target, job_state::running,
                    job_state::completing}));
  ASSERT_FALSE(HasFailure());
  run_to_end();
  ASSERT_EQ(done->size(), 1U);
  EXPECT_EQ(done->at(0).state, job_state::failed);
  EXPECT_EQ(dst->destroyed, std::vector<std::string>{"vm1"});
  EXPECT_FALSE(saw(*dst, "vm1:migrate_cancel")) << "no second fence";
  EXPECT_FALSE(saw(*src, "vm1:cont")) << "no second cont";
  EXPECT_TRUE(src->destroyed.empty());
}

// The source's agent went away while the job was still running, and the
// migration completed meanwhile (guests outlive their agents): the target
// holds the guest, and the job ends succeeded through completing (the fault
// matrix found the job trying to jump from running to succeeded).
TEST_F(handover_fixture, a_migration_that_completed_while_its_source_was_away_succeeds) {
  lose_source_while_running("completed");
  run_to_end();
  ASSERT_EQ(done->size(), 1U);
  EXPECT_EQ(done->at(0).state, job_state::succeeded) << done->at(0).error;
  EXPECT_TRUE(reached("running>completing"));
  EXPECT_EQ(walk().back(), "completing>succeeded");
  EXPECT_TRUE(dst->destroyed.empty());
}

TEST_F(job_fixture, a_staged_job_readies_both_sides_journals_nothing_and_migrates_on_go) {
  src->migrate_statuses = {"active", "completed"};
  start(true);
  run_to_end(5);
  // Ready and waiting: the target listens, the source is configured, and
  // nothing is journaled or migrated before the slot.
  EXPECT_TRUE(saw(*dst, "vm1:migrate-incoming"));
  EXPECT_TRUE(saw(*src, "vm1:migrate-set-parameters"));
  EXPECT_FALSE(saw(*src, "vm1:migrate"));
  EXPECT_TRUE(walk().empty());
  EXPECT_TRUE(done->empty());
  grant();
  run_to_end();
  ASSERT_EQ(done->size(), 1U);
  EXPECT_EQ(done->at(0).state, job_state::succeeded) << done->at(0).error;
  EXPECT_EQ(walk(), (std::vector<std::string>{"pending>scheduling", "scheduling>preparing-target",
                                              "preparing-target>running", "running>completing",
                                              "completing>succeeded"}));
  EXPECT_EQ(src->destroyed, std::vector<std::string>{"vm1"});
  EXPECT_TRUE(dropped->empty());
}

TEST_F(job_fixture, go_before_the_staged_target_is_ready_starts_once_it_is) {
  src->migrate_statuses = {"completed"};
  dst->hold_create = true;
  start(true);
  grant(); // the create is still out
  EXPECT_FALSE(saw(*src, "vm1:migrate"));
  caf::anon_send(dst_actor, capacity_atom::value); // releases the held create
  sched->run();
  run_to_end();
  ASSERT_EQ(done->size(), 1U);
  EXPECT_EQ(done->at(0).state, job_state::succeeded) << done->at(0).error;
  EXPECT_EQ(walk().at(1), "scheduling>preparing-target");
}

TEST_F(job_fixture, a_staged_job_that_cannot_get_ready_says_so_and_journals_nothing) {
  dst->create_fails = true;
  start(true);
  run_to_end(5);
  EXPECT_EQ(*dropped, std::vector<int64_t>{pending_job.id});
  EXPECT_TRUE(done->empty()) << "the move stays pending: the cluster starts it the plain way";
  EXPECT_TRUE(walk().empty());
  EXPECT_FALSE(saw(*src, "vm1:migrate"));
  EXPECT_TRUE(src->destroyed.empty());
}

TEST_F(job_fixture, a_cancelled_staged_job_removes_its_target_and_not_the_source) {
  start(true);
  run_to_end(5);
  ASSERT_TRUE(saw(*dst, "vm1:migrate-incoming"));
  caf::anon_send(job, cancel_atom::value);
  sched->run();
  EXPECT_EQ(dst->destroyed, std::vector<std::string>{"vm1"});
  EXPECT_TRUE(src->destroyed.empty());
  EXPECT_EQ(*dropped, std::vector<int64_t>{pending_job.id});
  EXPECT_TRUE(walk().empty());
}

TEST_F(job_fixture, a_staged_job_whose_host_is_lost_drops_the_stage_not_the_move) {
  start(true);
  run_to_end(5);
  caf::anon_send(job, host_lost_atom::value, std::string{"host-a"});
  sched->run();
  EXPECT_EQ(*dropped, std::vector<int64_t>{pending_job.id});
  EXPECT_TRUE(done->empty());
  EXPECT_EQ(dst->destroyed, std::vector<std::string>{"vm1"});
  EXPECT_TRUE(walk().empty());
}

TEST_F(job_fixture, completion_events_end_the_job_without_waiting_for_a_poll) {
  // No poll timer fires here: the events alone carry the job to the end.
  src->migrate_statuses = {"completed"};
  start();
  ASSERT_EQ(walk().back(), "preparing-target>running");
  send_completed_events();
  ASSERT_EQ(done->size(), 1U);
  EXPECT_EQ(done->at(0).state, job_state::succeeded) << done->at(0).error;
  EXPECT_EQ(walk().back(), "completing>succeeded");
  EXPECT_FALSE(saw(*dst, "vm1:query-migrate")) << "the target's own event confirmed it";
  EXPECT_EQ(src->destroyed, std::vector<std::string>{"vm1"});
}

// Postcopy, where policy allows it: the ladder's last rung switches the
// source; a pause is recovered by the job on its own (migrate-recover on the
// target, resume on the source), journaled; the move then completes.
struct postcopy_job : job_fixture {
  void SetUp() override {
    job_fixture::SetUp();
    policy.escalate_after_passes = 2;
    policy.downtime_steps = 0;
    policy.auto_converge_step = false;
    policy.dirty_limit_step = false;
    policy.postcopy_step = true;
    src->passes_per_poll = 1;
  }
  std::vector<std::string> steps() const {
    std::vector<std::string> out;
    for (const auto& s : log->steps())
      out.push_back(s.step);
    return out;
  }
  void rounds(int n) {
    for (int i = 0; i < n; ++i) {
      sched->trigger_timeouts();
      sched->run();
    }
  }
};

TEST_F(postcopy_job, the_rung_switches_and_a_pause_is_recovered_on_its_own) {
  src->migrate_statuses = {"active",          "active",          "active",
                           "postcopy-active", "postcopy-paused", "postcopy-recover",
                           "postcopy-active", "completed"};
  dst->incoming_statuses = {"postcopy-active", "postcopy-paused", "postcopy-active", "completed"};
  start();
  run_to_end();
  ASSERT_EQ(done->size(), 1U);
  EXPECT_EQ(done->at(0).state, job_state::succeeded) << done->at(0).error;
  EXPECT_TRUE(saw(*src, "vm1:migrate-start-postcopy"));
  EXPECT_TRUE(saw(*dst, "vm1:migrate-recover"));
  EXPECT_EQ(std::count(src->qmp_seen.begin(), src->qmp_seen.end(), "vm1:migrate"), 2)
    << "the migration, then its resume";
  EXPECT_FALSE(saw(*src, "vm1:migrate_cancel"));
  const auto s = steps();
  ASSERT_EQ(s.size(), 3U);
  EXPECT_EQ(s[0].rfind("postcopy: the guest moves now", 0), 0U) << s[0];
  EXPECT_EQ(s[1].rfind("postcopy-recover attempt 1 on tcp:127.0.0.1:", 0), 0U) << s[1];
  EXPECT_EQ(s[2], "postcopy recovered after 1 attempt(s)");
  EXPECT_EQ(src->destroyed, std::vector<std::string>{"vm1"}) << "the stale source copy goes";
  EXPECT_TRUE(dst->destroyed.empty());
}

// A resumed postcopy may finish before any round sees it flowing again:
// the completion events end the job, and the recovery is journaled all the
// same (the cluster counts it from that step).
TEST_F(postcopy_job, a_recovery_that_completes_before_a_round_sees_it_is_journaled) {
  src->migrate_statuses = {"active", "active", "active", "postcopy-active", "postcopy-paused"};
  dst->incoming_statuses = {"postcopy-active", "postcopy-paused"};
  start();
  const auto migrates = [&] {
    return std::count(src->qmp_seen.begin(), src->qmp_seen.end(), "vm1:migrate");
  };
  for (int i = 0; i < 50 && migrates() < 2; ++i)
    rounds(1);
  ASSERT_EQ(migrates(), 2) << "the migration, then its resume";
  send_completed_events();
  ASSERT_EQ(done->size(), 1U);
  EXPECT_EQ(done->at(0).state, job_state::succeeded) << done->at(0).error;
  const auto s = steps();
  ASSERT_EQ(s.size(), 3U);
  EXPECT_EQ(s[1].rfind("postcopy-recover attempt 1 on tcp:127.0.0.1:", 0), 0U) << s[1];
  EXPECT_EQ(s[2], "postcopy recovered after 1 attempt(s)");
}

// In postcopy the guest runs on the target: a cancel and a lost host change
// nothing. A target whose incoming migration failed has lost the guest: the
// job ends failed saying so, the source's stale copy is abandoned (its
// migration fails, it stays paused), and nothing is destroyed.
TEST_F(postcopy_job, nothing_cancels_it_and_a_target_that_lost_the_guest_is_surfaced) {
  src->migrate_statuses = {"active", "active", "active", "postcopy-active"};
  dst->incoming_statuses = {"postcopy-active"};
  start();
  rounds(6);
  ASSERT_TRUE(saw(*src, "vm1:migrate-start-postcopy"));
  caf::anon_send(job, cancel_atom::value);
  caf::anon_send(job, host_lost_atom::value, std::string{"host-b"});
  rounds(6);
  EXPECT_TRUE(done->empty()) << done->at(0).error;
  EXPECT_FALSE(saw(*src, "vm1:migrate_cancel"));
  src->migrate_statuses = {"postcopy-paused"};
  dst->incoming_statuses = {"failed"};
  run_to_end();
  ASSERT_EQ(done->size(), 1U);
  EXPECT_EQ(done->at(0).state, job_state::failed);
  EXPECT_NE(done->at(0).error.find("the guest was lost in postcopy"), std::string::npos)
    << done->at(0).error;
  EXPECT_TRUE(saw(*src, "vm1:migrate_cancel")) << "the source's postcopy abandoned";
  EXPECT_FALSE(saw(*src, "vm1:cont")) << "its stale copy never resumes";
  EXPECT_TRUE(src->destroyed.empty());
  EXPECT_TRUE(dst->destroyed.empty());
}

// After an orchestrator restart the journal says the job took the postcopy
// rung: the new job follows it in postcopy and recovers it on the port the
// target host reserved for the guest (the restarted job never ran
// migrate-incoming itself), numbering attempts on from the journal's.
TEST_F(postcopy_job, a_resumed_job_recovers_on_the_targets_reserved_port) {
  // (The resumed job's first look at the source takes the first status.)
  src->migrate_statuses = {"postcopy-paused", "postcopy-paused", "postcopy-recover",
                           "postcopy-active", "completed"};
  dst->incoming_statuses = {"postcopy-paused", "postcopy-active", "completed"};
  guest_info incoming;
  incoming.spec.name = "vm1";
  incoming.spec.incoming = true;
  incoming.migration_port = 4444;
  dst->guests.push_back(incoming);
  resume(journaled({job_state::scheduling, job_state::preparing_target, job_state::running},
                   {"postcopy: the guest moves now, its pages follow after 2 passes",
                    "postcopy-recover attempt 1 on tcp:127.0.0.1:4444"}));
  ASSERT_FALSE(HasFailure());
  run_to_end();
  ASSERT_EQ(done->size(), 1U);
  EXPECT_EQ(done->at(0).state, job_state::succeeded) << done->at(0).error;
  EXPECT_TRUE(saw(*dst, "vm1:migrate-recover"));
  EXPECT_FALSE(saw(*src, "vm1:migrate_cancel"));
  const auto s = steps();
  ASSERT_GE(s.size(), 3U);
  EXPECT_EQ(s[2], "postcopy-recover attempt 2 on tcp:127.0.0.1:4444");
}
