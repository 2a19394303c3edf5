// docs/metrics.md names every metric the agent and the orchestrator can
// export: both renderers run with every figure present, and each family
// they write (its TYPE line) must have a row in the document.

#include "agent/daemon/agent_metrics.hpp"
#include "orchestrator/orchestrator_metrics.hpp"
#include "tests/support/process.hpp"

#include <boost/json.hpp>
#include <gtest/gtest.h>

#include <set>
#include <sstream>

namespace ferry {
namespace {

namespace json = boost::json;

std::set<std::string> families(const std::string& text, std::string& help_lines) {
  std::set<std::string> out;
  std::istringstream in{text};
  bool first_sample = false;
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("# TYPE ", 0) == 0) {
      out.insert(line.substr(7, line.find(' ', 7) - 7));
      first_sample = true;
    }
    // HELP, TYPE and one sample (its labels) of each family.
    if (line.rfind("# ", 0) == 0 || first_sample)
      help_lines += line + "\n";
    if (line.rfind("# ", 0) != 0)
      first_sample = false;
  }
  return out;
}

std::string every_agent_figure() {
  agent_metrics_input in;
  in.capacity.host = "h";
  guest_metrics_input g;
  g.info.spec.name = "vm";
  g.answered = true;
  g.status = json::parse(R"({"status":"running"})").as_object();
  g.migrate = json::parse(R"({"status":"active","total-time":1,"setup-time":1,
    "expected-downtime":1,"downtime":1,"cpu-throttle-percentage":1,
    "dirty-limit-throttle-time-per-round":1,"dirty-limit-ring-full-time":1,
    "ram":{"transferred":1,"remaining":1,"total":1,"duplicate":1,"normal":1,"normal-bytes":1,
      "dirty-pages-rate":1,"mbps":1,"dirty-sync-count":1,"postcopy-requests":1,"page-size":1,
      "multifd-bytes":1,"pages-per-second":1,"precopy-bytes":1,"downtime-bytes":1,
      "postcopy-bytes":1,"dirty-sync-missed-zero-copy":1},
    "xbzrle-cache":{"cache-size":1,"bytes":1,"pages":1,"cache-miss":1,"cache-miss-rate":1,
      "encoding-rate":1,"overflow":1},
    "compression":{"pages":1,"busy":1,"busy-rate":1,"compressed-size":1,"compression-rate":1}})")
                .as_object();
  g.parameters =
    json::parse(R"({"downtime-limit":1,"max-bandwidth":1,"multifd-channels":1})").as_object();
  g.dirty_rate = json::parse(R"({"status":"measured","dirty-rate":1})").as_object();
  in.guests.push_back(g);
  return render_agent_metrics(in);
}

std::string every_orchestrator_figure() {
  orchestrator_metrics m;
  m.job_finished(job_state::succeeded, 1.0, 0.1, 0.3);
  cluster_view v;
  v.hosts = {{"a", true, false, 1, 1, 1}};
  migration_view mv;
  mv.id = 1;
  mv.state = job_state::running;
  mv.transferred = 1;
  mv.remaining = 1;
  mv.rate = 1;
  mv.passes = 1;
  v.migrations = {mv};
  evacuation_view e;
  e.id = 1;
  e.host = "a";
  v.evacuations = {e};
  return m.render(v);
}

TEST(metrics_docs, every_metric_has_a_row_in_docs_metrics_md) {
  const std::string doc = test::read_file(std::string{FERRY_SOURCE_DIR} + "/docs/metrics.md");
  ASSERT_FALSE(doc.empty());
  std::string help;
  auto names = families(every_agent_figure(), help);
  for (const auto& n : families(every_orchestrator_figure(), help))
    names.insert(n);
  EXPECT_GE(names.size(), 50U);
  std::string missing;
  for (const auto& n : names)
    if (doc.find("| `" + n + "`") == std::string::npos)
      missing += n + "\n";
  EXPECT_EQ(missing, "") << "undocumented metrics; what they look like:\n" << help;
}

} // namespace
} // namespace ferry
