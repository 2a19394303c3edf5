// The agent's /metrics text from known QMP answers: names, units turned into
// base units, one-hot status, guests whose monitor did not answer.

#include "agent/daemon/agent_metrics.hpp"

#include <boost/json.hpp>
#include <gtest/gtest.h>

namespace ferry {
namespace {

namespace json = boost::json;

bool has_line(const std::string& text, const std::string& line) {
  return text.find("\n" + line + "\n") != std::string::npos;
}

guest_metrics_input guest(const std::string& name, bool answered) {
  guest_metrics_input g;
  g.info.spec.name = name;
  g.info.spec.memory = 64u << 20;
  g.info.spec.vcpus = 2;
  g.answered = answered;
  return g;
}

TEST(agent_metrics, migration_figures_in_base_units) {
  agent_metrics_input in;
  in.capacity.host = "h1";
  in.capacity.memory_total = 1u << 30;
  in.capacity.memory_used = 64u << 20;
  auto g = guest("vm1", true);
  g.status = json::parse(R"({"status":"running","running":true})").as_object();
  g.migrate = json::parse(R"({"status":"active","total-time":1500,"expected-downtime":300,
    "setup-time":4,"ram":{"transferred":1000,"remaining":2000,"total":67108864,"mbps":80,
    "dirty-pages-rate":10,"page-size":4096,"dirty-sync-count":3},
    "xbzrle-cache":{"cache-size":67108864,"cache-miss-rate":0.25}})")
                .as_object();
  g.parameters = json::parse(R"({"downtime-limit":300,"max-bandwidth":134217728})").as_object();
  g.dirty_rate = json::parse(R"({"status":"measured","dirty-rate":16})").as_object();
  in.guests.push_back(g);
  const auto t = render_agent_metrics(in);
  const std::string l = "{host=\"h1\",vm=\"vm1\"}";
  EXPECT_TRUE(has_line(t, "ferry_agent_memory_offered_bytes{host=\"h1\"} 1073741824")) << t;
  EXPECT_TRUE(has_line(t, "ferry_agent_guests{host=\"h1\",role=\"running\"} 1")) << t;
  EXPECT_TRUE(has_line(t, "ferry_guest_up" + l + " 1")) << t;
  EXPECT_TRUE(has_line(t, "ferry_guest_running" + l + " 1")) << t;
  EXPECT_TRUE(has_line(t, "ferry_migration_transferred_bytes" + l + " 1000")) << t;
  EXPECT_TRUE(has_line(t, "ferry_migration_remaining_bytes" + l + " 2000")) << t;
  EXPECT_TRUE(has_line(t, "ferry_migration_dirty_syncs" + l + " 3")) << t;
  EXPECT_TRUE(has_line(t, "ferry_migration_throughput_bytes_per_second" + l + " 10000000")) << t;
  EXPECT_TRUE(has_line(t, "ferry_migration_total_time_seconds" + l + " 1.5")) << t;
  EXPECT_TRUE(has_line(t, "ferry_migration_expected_downtime_seconds" + l + " 0.3")) << t;
  EXPECT_TRUE(has_line(t, "ferry_migration_downtime_limit_seconds" + l + " 0.3")) << t;
  EXPECT_TRUE(has_line(t, "ferry_migration_dirty_rate_bytes_per_second" + l + " 40960")) << t;
  EXPECT_TRUE(has_line(t, "ferry_migration_xbzrle_cache_miss_ratio" + l + " 0.25")) << t;
  EXPECT_TRUE(has_line(t, "ferry_migration_cpu_throttle_percentage" + l + " 0"))
    << "a running migration reports no throttle as 0\n"
    << t;
  EXPECT_TRUE(has_line(t, "ferry_guest_dirty_rate_bytes_per_second" + l + " 16777216")) << t;
  EXPECT_TRUE(has_line(t, "ferry_migration_status{host=\"h1\",vm=\"vm1\",status=\"active\"} 1"));
  EXPECT_TRUE(has_line(t, "ferry_migration_status{host=\"h1\",vm=\"vm1\",status=\"none\"} 0"));
  EXPECT_EQ(t.find("ferry_migration_downtime_seconds"), std::string::npos)
    << "no downtime before the migration completes";
  EXPECT_EQ(t.find("postcopy_bytes"), std::string::npos) << "absent fields are left out";
}

TEST(agent_metrics, a_colo_primarys_checkpoints) {
  agent_metrics_input in;
  in.capacity.host = "h1";
  auto g = guest("vm1", true);
  g.migrate = json::parse(R"({"status":"colo","x-ferry-colo":{"checkpoints":3,
    "pause-seconds":{"bounds":[0.001,0.01],"counts":[2,1,0],"sum":0.004},
    "pages":{"bounds":[16,256],"counts":[0,2,1],"sum":700}}})")
                .as_object();
  in.guests.push_back(g);
  auto odd = guest("vm2", true);
  odd.migrate = json::parse(R"({"status":"colo","x-ferry-colo":{"checkpoints":1,
    "pause-seconds":{"bounds":[0.001],"counts":[1],"sum":0}}})")
                  .as_object();
  in.guests.push_back(odd);
  const auto t = render_agent_metrics(in);
  const std::string l = "{host=\"h1\",vm=\"vm1\"";
  EXPECT_TRUE(has_line(t, "ferry_colo_checkpoints_total" + l + "} 3")) << t;
  EXPECT_TRUE(has_line(t, "ferry_colo_checkpoint_pause_seconds_bucket" + l + ",le=\"0.001\"} 2"));
  EXPECT_TRUE(has_line(t, "ferry_colo_checkpoint_pause_seconds_bucket" + l + ",le=\"+Inf\"} 3"));
  EXPECT_TRUE(has_line(t, "ferry_colo_checkpoint_pages_bucket" + l + ",le=\"256\"} 2")) << t;
  EXPECT_TRUE(has_line(t, "ferry_colo_checkpoint_pages_sum" + l + "} 700")) << t;
  EXPECT_EQ(t.find("pause_seconds_count{host=\"h1\",vm=\"vm2\"}"), std::string::npos)
    << "a histogram whose counts do not fit its bounds is left out\n"
    << t;
}

TEST(agent_metrics, a_guest_that_did_not_answer_shows_only_what_the_agent_knows) {
  agent_metrics_input in;
  in.capacity.host = "h1";
  auto quiet = guest("quiet", false);
  quiet.info.spec.incoming = true;
  in.guests.push_back(quiet);
  const auto t = render_agent_metrics(in);
  EXPECT_TRUE(has_line(t, "ferry_guest_up{host=\"h1\",vm=\"quiet\"} 0")) << t;
  EXPECT_TRUE(has_line(t, "ferry_guest_memory_bytes{host=\"h1\",vm=\"quiet\"} 67108864")) << t;
  EXPECT_TRUE(has_line(t, "ferry_agent_guests{host=\"h1\",role=\"incoming\"} 1")) << t;
  EXPECT_EQ(t.find("ferry_migration_status"), std::string::npos) << t;
  EXPECT_EQ(t.find("ferry_guest_running"), std::string::npos) << t;
}

} // namespace
} // namespace ferry
