// Observability against a live cluster: the real Prometheus server (Debian's
// package) scrapes three agents and the orchestrator while host-a is
// evacuated; both kinds of /metrics pass `promtool check metrics` in the
// middle of the migrations; afterwards every PromQL query of every panel of
// every dashboard in deploy/grafana/dashboards runs through Prometheus' HTTP
// API and must return data. The moved guests are verified page by page.

#include "tests/support/cluster_fixture.hpp"
#include "tests/support/process.hpp"
#include "tools/ferryctl/http_client.hpp"

#include <boost/json.hpp>
#include <gtest/gtest.h>

#include <unistd.h>

#include <cctype>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>

namespace ferry::test {
namespace {

namespace json = boost::json;
using namespace std::chrono_literals;

using ctl::http_result;

std::string url_encode(const std::string& s) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char ch : s) {
    if (std::isalnum(ch) != 0 || ch == '-' || ch == '_' || ch == '.' || ch == '~') {
      out += static_cast<char>(ch);
    } else {
      out += '%';
      out += hex[ch >> 4];
      out += hex[ch & 15];
    }
  }
  return out;
}

std::string find_program(const std::string& name) {
  for (const char* dir : {"/usr/bin", "/usr/local/bin", "/bin"})
    if (::access((std::string{dir} + "/" + name).c_str(), X_OK) == 0)
      return std::string{dir} + "/" + name;
  return {};
}

// A dashboard query with Grafana's variables given values that match
// everything the test produced.
std::string instantiate(std::string expr) {
  const std::pair<const char*, const char*> vars[] = {{"$__rate_interval", "15s"},
                                                      {"$__range", "5m"},
                                                      {"$__interval", "2s"},
                                                      {"$host", ".+"},
                                                      {"$vm", ".+"}};
  for (const auto& [name, value] : vars)
    for (size_t at = expr.find(name); at != std::string::npos; at = expr.find(name, at))
      expr.replace(at, std::strlen(name), value);
  return expr;
}

class observed_cluster : public cluster {
protected:
  // Slow enough that scrapes (every second) see the migrations run: 8 MiB
  // at 2 MiB/s; a generous limit so the test guest's working set converges.
  std::string policy() const override {
    return "max_bandwidth = 2097152\ndowntime_limit_ms = 1000\n";
  }

  http_result get(uint16_t port, const std::string& target) {
    return get(host_port{"127.0.0.1", port}, target);
  }
  http_result get(const host_port& at, const std::string& target) {
    // A viewer's token: the orchestrator's endpoints need one; agents' ignore it.
    return ctl::http_request(at, "GET", target, {}, "Bearer " + c.viewer_token);
  }
  // Where host `h`'s agent serves /metrics.
  host_port metrics_of(const std::string& h) { return {c.address(h), c.metrics_port(h)}; }

  // `promtool check metrics` on one endpoint's text: no lint problems.
  void expect_promtool_clean(const host_port& at, const std::string& what) {
    auto r = get(at, "/metrics");
    ASSERT_EQ(r.status, 200) << what << ": " << r.body;
    const std::string file = c.dir.file("scrape.txt");
    std::ofstream{file} << r.body;
    auto check = run({"/bin/bash", "-c", promtool + " check metrics < " + file});
    EXPECT_EQ(check.status, 0) << what << ":\n" << check.output;
    EXPECT_EQ(check.output, "") << what << ": promtool has remarks";
  }

  std::string promtool = find_program("promtool");
};

TEST_F(observed_cluster, prometheus_scrapes_an_evacuation_and_every_dashboard_panel_has_data) {
  const std::string prometheus = find_program("prometheus");
  if (prometheus.empty() || promtool.empty())
    GTEST_SKIP() << "Prometheus is not installed (Debian package 'prometheus'; "
                    "deploy/install-deps.sh installs it)";
  // Prometheus scrapes every agent and the orchestrator each second and
  // evaluates the shipped alert rules.
  const auto prom_port = static_cast<uint16_t>(29000 + ::getpid() % 1000);
  {
    std::ofstream cfg{c.dir.file("prometheus.yml")};
    cfg << "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        << "rule_files:\n  - " << FERRY_SOURCE_DIR << "/deploy/prometheus/ferry-alerts.yml\n"
        << "scrape_configs:\n  - job_name: ferry-orchestrator\n"
        << "    authorization:\n      credentials_file: " << c.viewer_token_file() << "\n"
        << "    static_configs:\n"
        << "      - targets: ['127.0.0.1:" << c.api_port << "']\n"
        << "  - job_name: ferry-agent\n    static_configs:\n      - targets:\n";
    for (const auto& h : host_names)
      cfg << "          - '" << c.address(h) << ":" << c.metrics_port(h) << "'\n";
  }
  process prom{{prometheus, "--config.file=" + c.dir.file("prometheus.yml"),
                "--storage.tsdb.path=" + c.dir.file("tsdb"),
                "--web.listen-address=127.0.0.1:" + std::to_string(prom_port), "--log.level=warn"}};
  bool ready = false;
  for (int i = 0; i < 100 && !ready; ++i) {
    ready = get(prom_port, "/-/ready").status == 200;
    if (!ready)
      std::this_thread::sleep_for(100ms);
  }
  ASSERT_TRUE(ready) << "Prometheus did not start: " << prom.stderr_text();
  const auto t0 = std::chrono::system_clock::now();

  for (const char* g : {"g1", "g2", "g3"})
    create(g, "host-a");
  for (const char* g : {"g1", "g2", "g3"})
    wait_ready(g, "host-a");
  // A COLO pair checkpointing all along (the COLO dashboard's figures).
  create("p1", "host-b");
  wait_ready("p1", "host-b");
  auto pr = ctl({"protect", "p1", "--secondary", "host-c"});
  ASSERT_EQ(pr.status, 0) << pr.output;
  for (int i = 0; i < 300; ++i) {
    if (ctl({"pairs", "-o", "json"}).output.find("\"protected\"") != std::string::npos)
      break;
    std::this_thread::sleep_for(200ms);
  }
  ASSERT_NE(ctl({"pairs", "-o", "json"}).output.find("\"protected\""), std::string::npos)
    << c.story();
  std::this_thread::sleep_for(2s); // a few scrapes of the idle cluster
  auto ev = ctl({"evacuate", "host-a"});
  ASSERT_EQ(ev.status, 0) << ev.output;

  // In the middle of it (host-a's agent reports a guest's migration
  // active): both kinds of endpoint pass promtool's lint.
  std::string mid;
  for (int i = 0; i < 400; ++i) {
    mid = get(metrics_of("host-a"), "/metrics").body;
    if (mid.find("status=\"active\"} 1") != std::string::npos)
      break;
    std::this_thread::sleep_for(50ms);
  }
  ASSERT_NE(mid.find("status=\"active\"} 1"), std::string::npos) << mid << c.story();
  EXPECT_NE(mid.find("ferry_migration_transferred_bytes{host=\"host-a\",vm=\"g"), std::string::npos)
    << mid;
  const auto b = get(metrics_of("host-b"), "/metrics").body;
  EXPECT_NE(b.find("ferry_colo_checkpoint_pause_seconds_bucket{host=\"host-b\",vm=\"p1\""),
            std::string::npos)
    << b;
  expect_promtool_clean(metrics_of("host-a"), "agent host-a");
  expect_promtool_clean({"127.0.0.1", c.api_port}, "orchestrator");

  auto done = ctl({"evacuate", "host-a", "--wait"});
  for (int i = 0; i < 600; ++i) {
    const auto jobs = json::parse(ctl({"migrations", "-o", "json"}).output);
    size_t finished = 0;
    for (const auto& j : jobs.as_array())
      finished += j.at("state").as_string() == "succeeded" ? 1 : 0;
    if (finished == 3)
      break;
    std::this_thread::sleep_for(100ms);
  }
  // Each move's estimate was refined by its guest's calc-dirty-rate pre-flight.
  const auto moves = json::parse(ctl({"migrations", "-o", "json"}).output);
  for (const auto& j : moves.as_array()) {
    EXPECT_GT(j.at("estimate_s").to_number<double>(), 0) << j;
    EXPECT_TRUE(j.as_object().contains("dirty_rate")) << "no pre-flight measurement: " << j;
  }
  auto where = placements();
  for (const char* g : {"g1", "g2", "g3"}) {
    ASSERT_EQ(where[g].size(), 1U) << g;
    EXPECT_NE(where[g][0], "host-a") << g;
    verify_guest(g, where[g][0]);
  }
  std::this_thread::sleep_for(3s); // the final figures scraped and the rules evaluated
  expect_promtool_clean({"127.0.0.1", c.api_port}, "orchestrator (after)");
  for (const auto& h : host_names)
    expect_promtool_clean(metrics_of(h), "agent " + h + " (after)");

  // Every panel's every query returns data over the test's time range.
  const auto end = std::chrono::system_clock::now();
  auto epoch = [](std::chrono::system_clock::time_point t) {
    return std::to_string(
      std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count());
  };
  size_t queries = 0;
  const std::filesystem::path dir = std::string{FERRY_SOURCE_DIR} + "/deploy/grafana/dashboards";
  for (const auto& file : std::filesystem::directory_iterator(dir)) {
    const auto dash = json::parse(read_file(file.path().string()));
    const std::string title{dash.at("title").as_string()};
    for (const auto& panel : dash.at("panels").as_array()) {
      const std::string ptitle{panel.at("title").as_string()};
      for (const auto& target : panel.at("targets").as_array()) {
        const std::string expr = instantiate(std::string{target.at("expr").as_string()});
        ++queries;
        auto r = get(prom_port, "/api/v1/query_range?query=" + url_encode(expr) +
                                  "&start=" + epoch(t0) + "&end=" + epoch(end) + "&step=1");
        ASSERT_EQ(r.status, 200) << title << " / " << ptitle << ": " << expr << "\n" << r.body;
        const auto reply = json::parse(r.body);
        EXPECT_EQ(reply.at("status"), "success") << expr;
        const auto& series = reply.at("data").at("result").as_array();
        EXPECT_FALSE(series.empty()) << title << " / " << ptitle << ": no data for " << expr;
      }
    }
  }
  EXPECT_GE(queries, 39U) << "the dashboards lost panels";
  (void) done;
}

} // namespace
} // namespace ferry::test
