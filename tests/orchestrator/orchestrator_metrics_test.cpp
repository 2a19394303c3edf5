// The orchestrator's /metrics: results and histograms, escalation steps,
// per-migration progress that never goes backwards, evacuation progress.

#include "orchestrator/orchestrator_metrics.hpp"

#include <gtest/gtest.h>

namespace ferry {
namespace {

bool has_line(const std::string& text, const std::string& line) {
  return text.find(line + "\n") != std::string::npos;
}

migration_view running(uint64_t transferred, uint64_t remaining) {
  migration_view m;
  m.id = 7;
  m.guest = "db";
  m.source = "a";
  m.target = "b";
  m.state = job_state::running;
  m.transferred = transferred;
  m.remaining = remaining;
  m.rate = 1000;
  m.passes = 2;
  return m;
}

const std::string labels = "{id=\"7\",vm=\"db\",source=\"a\",target=\"b\"}";

TEST(orchestrator_metrics, progress_never_goes_backwards) {
  orchestrator_metrics m;
  cluster_view v;
  v.migrations = {running(600, 400)};
  auto t = m.render(v);
  EXPECT_TRUE(has_line(t, "ferry_orchestrator_migration_progress_ratio" + labels + " 0.6")) << t;
  EXPECT_TRUE(has_line(t, "ferry_orchestrator_migration_eta_seconds" + labels + " 0.4")) << t;
  EXPECT_TRUE(has_line(t, "ferry_orchestrator_migrations{phase=\"running\"} 1")) << t;
  EXPECT_TRUE(has_line(t, "ferry_orchestrator_migrations{phase=\"pending\"} 0")) << t;
  // A new pass found more dirty memory: the ratio computed drops, the one shown does not.
  v.migrations = {running(700, 1300)};
  t = m.render(v);
  EXPECT_TRUE(has_line(t, "ferry_orchestrator_migration_progress_ratio" + labels + " 0.6")) << t;
  v.migrations = {running(900, 100)};
  t = m.render(v);
  EXPECT_TRUE(has_line(t, "ferry_orchestrator_migration_progress_ratio" + labels + " 0.9")) << t;
  v.migrations[0].state = job_state::completing;
  t = m.render(v);
  EXPECT_TRUE(has_line(t, "ferry_orchestrator_migration_progress_ratio" + labels + " 1")) << t;
  v.migrations[0].state = job_state::succeeded;
  t = m.render(v);
  EXPECT_EQ(t.find("ferry_orchestrator_migration_progress_ratio{"), std::string::npos)
    << "finished migrations leave the per-migration series";
}

TEST(orchestrator_metrics, results_histograms_and_steps) {
  orchestrator_metrics m;
  auto t = m.render({});
  EXPECT_TRUE(has_line(t, "ferry_orchestrator_migrations_finished_total{result=\"failed\"} 0"))
    << "every result is there from the start" << t;
  EXPECT_TRUE(has_line(t, "ferry_orchestrator_escalation_steps_total{step=\"cancel\"} 0")) << t;
  EXPECT_TRUE(has_line(t, "ferry_orchestrator_switchover_proofs_total{result=\"refused\"} 0"));
  m.job_finished(job_state::succeeded, 3.0, 0.05, 0.3);
  m.job_finished(job_state::succeeded, 12.0, 0.4, 0.3); // over its limit
  m.job_finished(job_state::failed, std::nullopt, std::nullopt, std::nullopt);
  m.job_finished(job_state::failed, 2.0, std::nullopt, 0.3,
                 "the destination refused the migration: switchover digest mismatch: the pages "
                 "here differ from what the source sent");
  m.escalation_step("downtime-limit");
  m.escalation_step("downtime-limit");
  t = m.render({});
  EXPECT_TRUE(has_line(t, "ferry_orchestrator_migrations_finished_total{result=\"succeeded\"} 2"));
  EXPECT_TRUE(has_line(t, "ferry_orchestrator_migrations_finished_total{result=\"failed\"} 2"));
  EXPECT_TRUE(has_line(t, "ferry_orchestrator_switchover_proofs_total{result=\"verified\"} 2"))
    << t;
  EXPECT_TRUE(has_line(t, "ferry_orchestrator_switchover_proofs_total{result=\"refused\"} 1"))
    << "only the failure the destination's digest refused counts as refused" << t;
  EXPECT_TRUE(has_line(t, "ferry_orchestrator_migration_duration_seconds_count 2")) << t;
  EXPECT_TRUE(has_line(t, "ferry_orchestrator_migration_duration_seconds_sum 15")) << t;
  EXPECT_TRUE(has_line(t, "ferry_orchestrator_migration_duration_seconds_bucket{le=\"5\"} 1"));
  EXPECT_TRUE(has_line(t, "ferry_orchestrator_migration_downtime_seconds_bucket{le=\"0.05\"} 1"));
  EXPECT_TRUE(has_line(t, "ferry_orchestrator_migrations_over_downtime_limit_total 1")) << t;
  EXPECT_TRUE(has_line(t, "ferry_orchestrator_escalation_steps_total{step=\"downtime-limit\"} 2"));
}

// Postcopy: migrations by the source's postcopy status, time paused and
// blocktime per migration (0 before postcopy), recoveries apart from the
// ladder's steps.
TEST(orchestrator_metrics, postcopy_phases_pauses_blocktime_and_recoveries) {
  orchestrator_metrics m;
  cluster_view v;
  auto paused = running(600, 400);
  paused.status = "postcopy-paused";
  paused.postcopy_paused_s = 12.5;
  paused.postcopy_blocktime_s = 0.25;
  auto precopy = running(10, 990);
  precopy.id = 8;
  precopy.status = "active";
  v.migrations = {paused, precopy};
  m.escalation_step("postcopy");
  m.escalation_step("postcopy-recover");
  m.escalation_step("postcopy-recover");
  m.escalation_step("postcopy-recovered");
  const auto t = m.render(v);
  EXPECT_TRUE(has_line(t, "ferry_orchestrator_migrations_postcopy{phase=\"postcopy-paused\"} 1"))
    << t;
  EXPECT_TRUE(has_line(t, "ferry_orchestrator_migrations_postcopy{phase=\"postcopy-active\"} 0"));
  EXPECT_TRUE(
    has_line(t, "ferry_orchestrator_migration_postcopy_paused_seconds" + labels + " 12.5"));
  EXPECT_TRUE(
    has_line(t, "ferry_orchestrator_migration_postcopy_blocktime_seconds" + labels + " 0.25"));
  const std::string other = "{id=\"8\",vm=\"db\",source=\"a\",target=\"b\"}";
  EXPECT_TRUE(has_line(t, "ferry_orchestrator_migration_postcopy_paused_seconds" + other + " 0"));
  EXPECT_TRUE(has_line(t, "ferry_orchestrator_escalation_steps_total{step=\"postcopy\"} 1"));
  EXPECT_TRUE(has_line(t, "ferry_orchestrator_postcopy_recoveries_total{result=\"attempted\"} 2"));
  EXPECT_TRUE(has_line(t, "ferry_orchestrator_postcopy_recoveries_total{result=\"recovered\"} 1"));
  EXPECT_EQ(t.find("step=\"postcopy-recover"), std::string::npos) << "not a ladder step";
}

TEST(orchestrator_metrics, hosts_and_evacuations) {
  orchestrator_metrics m;
  cluster_view v;
  v.hosts = {{"a", true, true, true, 100, 60, 3}, {"b", false, false, false, 0, 0, 0}};
  evacuation_view e;
  e.id = 4;
  e.host = "a";
  e.moved = 1;
  e.in_flight = 2;
  e.remaining = 3;
  v.evacuations = {e};
  const auto t = m.render(v);
  EXPECT_TRUE(has_line(t, "ferry_orchestrator_host_up{host=\"a\"} 1")) << t;
  EXPECT_TRUE(has_line(t, "ferry_orchestrator_host_up{host=\"b\"} 0")) << t;
  EXPECT_TRUE(has_line(t, "ferry_orchestrator_host_draining{host=\"a\"} 1")) << t;
  EXPECT_TRUE(has_line(t, "ferry_orchestrator_host_degraded{host=\"a\"} 1")) << t;
  EXPECT_TRUE(has_line(t, "ferry_orchestrator_host_degraded{host=\"b\"} 0")) << t;
  EXPECT_EQ(t.find("ferry_orchestrator_host_guests{host=\"b\"}"), std::string::npos)
    << "no inventory figures for a host that is down";
  EXPECT_TRUE(has_line(t, "ferry_orchestrator_evacuations_in_progress 1")) << t;
  EXPECT_TRUE(has_line(
    t, "ferry_orchestrator_evacuation_guests{host=\"a\",evacuation=\"4\",state=\"remaining\"} 3"));
  EXPECT_TRUE(
    has_line(t, "ferry_orchestrator_evacuation_progress_ratio{host=\"a\",evacuation=\"4\"} 0.25"))
    << t;
}

TEST(orchestrator_metrics, colo_pairs_by_state_time_unprotected_and_failovers) {
  orchestrator_metrics m;
  cluster_view v;
  v.pairs = {{"db", "a", "b", pair_state::protected_, 0},
             {"web", "b", "", pair_state::unprotected, 12.5}};
  v.colo_failovers = 2;
  const auto t = m.render(v);
  EXPECT_TRUE(has_line(t, "ferry_orchestrator_colo_pairs{state=\"protected\"} 1")) << t;
  EXPECT_TRUE(has_line(t, "ferry_orchestrator_colo_pairs{state=\"unprotected\"} 1")) << t;
  EXPECT_TRUE(has_line(t, "ferry_orchestrator_colo_pairs{state=\"failing-over\"} 0")) << t;
  EXPECT_EQ(t.find("state=\"ended\""), std::string::npos) << "ended pairs are gone";
  EXPECT_TRUE(has_line(t, "ferry_orchestrator_colo_pair_state{vm=\"db\",state=\"protected\"} 1"));
  EXPECT_TRUE(has_line(t, "ferry_orchestrator_colo_pair_state{vm=\"db\",state=\"unprotected\"} 0"));
  EXPECT_TRUE(has_line(t, "ferry_orchestrator_colo_unprotected_seconds{vm=\"db\"} 0")) << t;
  EXPECT_TRUE(has_line(t, "ferry_orchestrator_colo_unprotected_seconds{vm=\"web\"} 12.5")) << t;
  EXPECT_TRUE(has_line(t, "ferry_orchestrator_colo_failovers_total 2")) << t;
}

} // namespace
} // namespace ferry
