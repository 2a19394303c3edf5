// Every "-> request / <- reply" example of the 9.1 migration schema, sent to
// a live ferry-agent. Each command is in one table below: either its reply
// must have the documented shape now, or it must answer the GenericError
// that names what it still needs. A schema example whose command is in
// neither fails the test, so the table grows with the implementation.

#include "tests/support/process.hpp"
#include "tools/qmp/qmp_client.hpp"

#include <boost/json.hpp>
#include <gtest/gtest.h>

#include <map>
#include <set>

using namespace ferry::test;
using ferry::qmp_tool::qmp_client;
using namespace std::chrono_literals;
namespace json = boost::json;

namespace {

// Commands whose examples must already be answered with the documented shape.
const std::set<std::string> shaped = {"query-migrate", "query-vcpu-dirty-limit",
                                      "migrate-set-capabilities", "query-migrate-capabilities",
                                      "migrate-set-parameters", "query-migrate-parameters",
                                      "migrate_cancel", "query-jobs", "query-colo-status",
                                      // Jobs are made (each then fails: this
                                      // agent has no disks, its JobInfo says so).
                                      "snapshot-save", "snapshot-load", "snapshot-delete"};

// Commands that still answer an error, and the fragment that error names.
// The examples run in order on one agent: the migrate-set-capabilities
// example has turned xbzrle on by the time migrate's examples run, and the
// agent was not started with -incoming. migrate's examples start migrations
// to addresses nobody listens on: each is accepted as documented (and fails
// later) or refused because the one before is still under way.
const std::map<std::string, std::string> waiting = {
  {"migrate", "There's a migration process in progress|RDMA migration is not supported"},
  {"migrate-incoming",
   "'-incoming' was not specified on the command line|RDMA migration is not supported"},
  {"migrate-start-postcopy", "Enable postcopy with migrate_set_capability"},
  {"migrate-continue", "Migration not in expected state: none"},
  {"migrate-pause", "only supported during postcopy-active state"},
  {"migrate-recover", "can only be run when postcopy is paused"},
  {"x-colo-lost-heartbeat", "VM is not in COLO mode"},
  {"xen-save-devices-state", "is not available: it needs Xen"},
  {"xen-set-global-dirty-log", "is not available: it needs Xen"},
  {"xen-load-devices-state", "is not available: it needs Xen"},
  {"xen-set-replication", "is not available: it needs Xen"},
  {"query-xen-replication-status", "is not available: it needs Xen"},
  {"xen-colo-do-checkpoint", "is not available: it needs Xen"},
  {"calc-dirty-rate",
   "the dirty rate is already being measured|unavailable while a migration tracks dirty pages"},
  {"set-vcpu-dirty-limit", "requires KVM with accelerator property 'dirty-ring-size'"},
};

// Examples QEMU's documentation gets wrong, and the schema error QEMU (and
// Ferry) answer when they are sent as written.
const std::map<std::string, std::string> documented_but_invalid = {
  // "offset": "0x1000" is a string where the schema wants uint64.
  {R"("offset":"0x1000")",
   "Invalid parameter type for 'channels[0].addr.offset', expected: integer"},
  // The example closes the request before its "arguments".
  {R"({"execute":"set-vcpu-dirty-limit"})", "Parameter 'dirty-rate' is missing"},
};

// Whether `got` has every member `doc` shows, of the same JSON kind (integers
// and floats are both numbers), recursively; arrays by their first element.
std::string shape_mismatch(const json::value& doc, const json::value& got,
                           const std::string& path) {
  if (doc.is_number() && got.is_number())
    return {};
  if (doc.kind() != got.kind())
    return path + ": documented " + json::serialize(doc) + ", got " + json::serialize(got);
  if (doc.is_object()) {
    for (const auto& kv : doc.as_object()) {
      const auto* g = got.as_object().if_contains(kv.key());
      if (g == nullptr)
        return path + "." + std::string{kv.key()} + " is missing";
      if (auto m = shape_mismatch(kv.value(), *g, path + "." + std::string{kv.key()}); !m.empty())
        return m;
    }
  }
  if (doc.is_array() && !doc.as_array().empty() && !got.as_array().empty())
    return shape_mismatch(doc.as_array()[0], got.as_array()[0], path + "[0]");
  return {};
}

} // namespace

TEST(schema_examples, every_example_is_answered_as_documented_or_names_what_it_needs) {
  const auto examples =
    json::parse(read_file(std::string{FERRY_SOURCE_DIR} + "/protocol/qapi/migration-examples.json"))
      .as_array();
  ASSERT_GT(examples.size(), 30U);

  temp_dir tmp;
  const std::string qmp_path = tmp.file("qmp.sock");
  process agent{{binary("agent/ferry-agent"), "vm", "-m", "16M", "-accel", "none", "-qmp",
                 "unix:" + qmp_path + ",server=on,wait=off"}};
  qmp_client q{qmp_path};
  ASSERT_TRUE(q.send_raw(R"({"execute":"qmp_capabilities","arguments":{"enable":["oob"]}})"
                         "\n")
                .as_object()
                .contains("return"));

  size_t matched = 0;
  size_t named_gaps = 0;
  for (const auto& ex : examples) {
    const auto& req = ex.at("request");
    if (req.is_null())
      continue; // an event example
    const auto& obj = req.as_object();
    const std::string cmd{
      (obj.contains("execute") ? obj.at("execute") : obj.at("exec-oob")).as_string()};
    const auto& doc = ex.at("reply");
    const auto reply = q.send_raw(json::serialize(req) + "\n");
    SCOPED_TRACE(json::serialize(req) + " -> " + json::serialize(reply));
    if (shaped.count(cmd) != 0) {
      ASSERT_TRUE(reply.as_object().contains("return"));
      const auto mismatch = shape_mismatch(doc.at("return"), reply.at("return"), "return");
      if (cmd == "query-migrate" && !doc.at("return").as_object().empty()) {
        // The documented replies describe a migration in flight or done;
        // before any migration QEMU, like Ferry, answers {}.
        EXPECT_EQ(reply.at("return"), json::object{});
        ++named_gaps;
        continue;
      }
      EXPECT_EQ(mismatch, "");
      ++matched;
      continue;
    }
    const std::string sent = json::serialize(req);
    bool known_bad = false;
    for (const auto& [fragment, desc] : documented_but_invalid)
      if (sent.find(fragment) != std::string::npos) {
        EXPECT_EQ(std::string{reply.at("error").at("desc").as_string()}, desc);
        known_bad = true;
      }
    if (known_bad)
      continue;
    // Commands that start something in the background: accepted as
    // documented, or refused while the previous example's work goes on.
    if ((cmd == "migrate" || cmd == "calc-dirty-rate") && reply.as_object().contains("return")) {
      EXPECT_EQ(reply.at("return"), doc.at("return"));
      ++matched;
      continue;
    }
    auto it = waiting.find(cmd);
    ASSERT_NE(it, waiting.end()) << "no expectation for the example of " << cmd;
    ASSERT_TRUE(reply.as_object().contains("error"));
    EXPECT_EQ(reply.at("error").at("class"), "GenericError");
    const std::string desc{reply.at("error").at("desc").as_string()};
    bool named = false;
    for (size_t at = 0; at <= it->second.size();) {
      const size_t bar = std::min(it->second.find('|', at), it->second.size());
      named = named || desc.find(it->second.substr(at, bar - at)) != std::string::npos;
      at = bar + 1;
    }
    EXPECT_TRUE(named) << "expected one of: " << it->second;
    ++named_gaps;
  }
  EXPECT_GE(matched, 8U);
  std::printf("schema examples: %zu answered with the documented shape, %zu name what they need\n",
              matched, named_gaps);
  q.execute("quit");
  EXPECT_EQ(agent.wait(10s), 0);
}
