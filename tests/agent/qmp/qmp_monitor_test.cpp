#include "agent/qmp/qmp_monitor.hpp"
#include "agent/vmm/synthetic_guest.hpp"
#include "protocol/qapi_catalog.hpp"
#include "tests/support/temp_dir.hpp"

#include <boost/json.hpp>
#include <gtest/gtest.h>

#include <fstream>
#include <iterator>
#include <thread>

using namespace ferry;
namespace json = boost::json;

namespace {

struct monitor_fixture : ::testing::Test {
  void SetUp() override {
    synthetic_guest_config cfg;
    cfg.memory = {memory_backend::kind::ram, 4u << 20, {}, false};
    cfg.ws_start = 1u << 20;
    cfg.ws_pages = 16;
    auto g = synthetic_guest::create(cfg);
    ASSERT_TRUE(g);
    guest = std::move(*g);
    monitor = std::make_unique<qmp_monitor>(
      *guest, vm_identity{"vm1", "12345678-1234-1234-1234-123456789abc"},
      [this](const std::string& line) {
        const auto ev = json::parse(line);
        events.push_back(ev.at("event").as_string().c_str());
        if (const auto* data = ev.as_object().if_contains("data"))
          if (const auto* st = data->as_object().if_contains("status"))
            statuses.push_back(st->as_string().c_str());
      },
      [this] { quit = true; });
  }

  json::value ok(const std::string& cmd, const json::object& args = {}) {
    auto r = monitor->execute(cmd, args);
    if (auto* f = std::get_if<qmp_failure>(&r)) {
      ADD_FAILURE() << cmd << ": " << f->desc;
      return nullptr;
    }
    return std::get<json::value>(r);
  }

  qmp_failure fails(const std::string& cmd, const json::object& args = {}) {
    auto r = monitor->execute(cmd, args);
    if (auto* f = std::get_if<qmp_failure>(&r))
      return *f;
    ADD_FAILURE() << cmd << " unexpectedly succeeded";
    return {};
  }

  std::string status() { return ok("query-status").at("status").as_string().c_str(); }

  // Declared before the monitor so they outlive it (its callbacks write them).
  std::vector<std::string> events;
  std::vector<std::string> statuses; // of MIGRATION events
  bool quit = false;
  std::unique_ptr<synthetic_guest> guest;
  std::unique_ptr<qmp_monitor> monitor;
};

} // namespace

TEST_F(monitor_fixture, prelaunch_cont_stop_cont_with_events) {
  EXPECT_EQ(status(), "prelaunch");
  EXPECT_EQ(ok("query-status").at("running"), false);
  ok("cont");
  EXPECT_EQ(status(), "running");
  EXPECT_EQ(ok("query-status").at("running"), true);
  ok("stop");
  EXPECT_EQ(status(), "paused");
  ok("stop"); // stopping a stopped guest is quiet
  ok("cont");
  EXPECT_EQ(status(), "running");
  ok("cont"); // so is continuing a running one
  EXPECT_EQ(events, (std::vector<std::string>{"RESUME", "STOP", "RESUME"}));
}

TEST_F(monitor_fixture, identity_queries) {
  EXPECT_EQ(ok("query-name").at("name"), "vm1");
  EXPECT_EQ(ok("query-uuid").at("UUID"), "12345678-1234-1234-1234-123456789abc");
  EXPECT_EQ(ok("query-version").at("qemu").at("major"), 9);
  const auto cmds = ok("query-commands").as_array();
  EXPECT_EQ(cmds.size(), qmp_monitor::commands().size());
  EXPECT_NE(std::find(cmds.begin(), cmds.end(), json::value{{"name", "pmemsave"}}), cmds.end());
}

TEST_F(monitor_fixture, pmemsave_writes_exactly_the_range) {
  auto mem = guest->memory().bytes();
  for (size_t i = 0; i < 8192; ++i)
    mem[0x3000 + i] = static_cast<uint8_t>(i * 13);
  const ferry::test::temp_dir tmp;
  const std::string file = tmp.file("pmemsave.bin");
  ok("pmemsave", {{"val", 0x3000}, {"size", 8192}, {"filename", file}});
  std::ifstream in{file, std::ios::binary};
  std::vector<uint8_t> got{std::istreambuf_iterator<char>(in), {}};
  ASSERT_EQ(got.size(), 8192U);
  EXPECT_TRUE(std::equal(got.begin(), got.end(), mem.begin() + 0x3000));
}

TEST_F(monitor_fixture, bad_arguments_get_qemu_errors) {
  EXPECT_EQ(fails("pmemsave", {{"val", 0}, {"size", 1}}).desc, "Parameter 'filename' is missing");
  EXPECT_EQ(fails("pmemsave", {{"val", "0"}, {"size", 1}, {"filename", "/tmp/x"}}).desc,
            "Invalid parameter type for 'val', expected: integer");
  EXPECT_EQ(fails("pmemsave", {{"val", 0}, {"size", 1}, {"filename", "/tmp/x"}, {"cpu", 0}}).desc,
            "Parameter 'cpu' is unexpected");
  EXPECT_NE(fails("pmemsave", {{"val", 4u << 20}, {"size", 1}, {"filename", "/tmp/x"}})
              .desc.find("Invalid addr"),
            std::string::npos);
  EXPECT_NE(
    fails("pmemsave", {{"val", -1}, {"size", 1}, {"filename", "/tmp/x"}}).desc.find("Invalid addr"),
    std::string::npos);
  EXPECT_EQ(fails("pmemsave", {{"val", 0}, {"size", 1}, {"filename", "/nonexistent/dir/x"}}).desc,
            "Could not open '/nonexistent/dir/x'");
  EXPECT_EQ(fails("stop", {{"now", true}}).desc, "Parameter 'now' is unexpected");
  auto nf = fails("migrate-teleport");
  EXPECT_EQ(nf.cls, qmp::error_class::command_not_found);
  EXPECT_EQ(nf.desc, "The command migrate-teleport has not been found");
}

namespace {

// A smallest valid value of a schema type: required members only, first enum
// value, empty lists. Types from other schema files accept anything.
json::value sample(const json::value& type);

json::object sample_members(const json::object& members) {
  json::object out;
  for (const auto& kv : members) {
    if (kv.key().starts_with('*'))
      continue;
    const json::value& t = kv.value().is_object() ? kv.value().as_object().at("type") : kv.value();
    out[kv.key()] = sample(t);
  }
  return out;
}

json::value sample(const json::value& type) {
  if (type.is_array())
    return json::array{};
  if (type.is_object())
    return sample_members(type.as_object());
  const std::string t{type.as_string()};
  if (t == "str")
    return "x";
  if (t == "bool")
    return false;
  if (t == "number" || t.find("int") != std::string::npos || t == "size")
    return 1;
  const auto& cat = ferry::qapi::catalog::migration();
  const auto* def = cat.find(t);
  if (def == nullptr)
    return json::object{};
  if (def->contains("enum"))
    return json::value(cat.enum_values(t).front());
  if (def->contains("struct"))
    return sample_members(def->at("data").as_object());
  return json::object{};
}

} // namespace

TEST_F(monitor_fixture, every_schema_command_is_listed_and_works_or_says_what_is_missing) {
  const auto listed = ok("query-commands").as_array();
  const auto& implemented = qmp_monitor::implemented_commands();
  const auto& cat = ferry::qapi::catalog::migration();
  for (const auto& cmd : cat.commands()) {
    EXPECT_NE(std::find(listed.begin(), listed.end(), json::value{{"name", cmd}}), listed.end())
      << cmd << " missing from query-commands";
    if (std::find(implemented.begin(), implemented.end(), cmd) != implemented.end())
      continue;
    const auto* def = cat.find(cmd);
    const json::object args =
      def->contains("data") ? sample(def->at("data")).as_object() : json::object{};
    const auto f = fails(cmd, args);
    EXPECT_EQ(f.cls, qmp::error_class::generic_error) << cmd;
    EXPECT_EQ(f.desc.rfind("Command '" + cmd + "' is not available: ", 0), 0U)
      << cmd << " " << json::serialize(args) << ": " << f.desc;
  }
  EXPECT_NE(fails("xen-save-devices-state", {{"filename", "/tmp/x"}}).desc.find("Xen"),
            std::string::npos);
  EXPECT_EQ(fails("migrate-incoming", {{"uri", "tcp:127.0.0.1:0"}}).desc,
            "'-incoming' was not specified on the command line");
  // Arguments are checked before availability, as QEMU checks them first.
  EXPECT_EQ(fails("migrate-continue").desc, "Parameter 'state' is missing");
  EXPECT_EQ(fails("migrate", {{"bogus", 1}}).desc, "Parameter 'bogus' is unexpected");
}

TEST_F(monitor_fixture, jobs) {
  EXPECT_EQ(ok("query-jobs"), json::array{});
  EXPECT_EQ(fails("job-dismiss", {{"id", "snap0"}}).desc, "Job not found");
  EXPECT_EQ(fails("job-dismiss").desc, "Parameter 'id' is missing");
  EXPECT_EQ(fails("query-jobs", {{"x", 1}}).desc, "Parameter 'x' is unexpected");
}

// A snapshot job that cannot work (this guest has no disks) is still a job:
// its error is in query-jobs, its steps are JOB_STATUS_CHANGE events, and it
// waits, concluded, for job-dismiss (QEMU's flow for snapshot-save).
TEST_F(monitor_fixture, a_failing_snapshot_job_concludes_with_its_error_until_dismissed) {
  const json::object args{
    {"job-id", "snap0"}, {"tag", "t"}, {"vmstate", "disk0"}, {"devices", json::array{"disk0"}}};
  EXPECT_EQ(ok("snapshot-save", args), json::object{});
  EXPECT_EQ(fails("snapshot-save", args).desc, "Job ID 'snap0' already in use");
  json::object bad_id = args;
  bad_id["job-id"] = "0snap";
  EXPECT_EQ(fails("snapshot-load", bad_id).desc, "Invalid job ID '0snap'");
  json::value jobs;
  for (int i = 0; i < 500; ++i) {
    jobs = ok("query-jobs");
    if (jobs.as_array().size() == 1 && jobs.at(0).at("status") == "concluded")
      break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_EQ(jobs.as_array().size(), 1U) << json::serialize(jobs);
  EXPECT_EQ(jobs.at(0).at("id"), "snap0");
  EXPECT_EQ(jobs.at(0).at("type"), "snapshot-save");
  EXPECT_EQ(jobs.at(0).at("status"), "concluded");
  EXPECT_EQ(jobs.at(0).at("error"), "No block device node 'disk0'");
  EXPECT_EQ(statuses, (std::vector<std::string>{"created", "running", "aborting", "concluded"}));
  EXPECT_EQ(status(), "prelaunch") << "a job that failed before the guest left it alone";
  ok("job-dismiss", {{"id", "snap0"}});
  EXPECT_EQ(statuses.back(), "null");
  EXPECT_EQ(ok("query-jobs"), json::array{});
  // The id is free again.
  EXPECT_EQ(ok("snapshot-delete", {{"job-id", "snap0"}, {"tag", "t"}, {"devices", json::array{}}}),
            json::object{});
  for (int i = 0; i < 500 && ok("query-jobs").at(0).at("status") != "concluded"; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  const auto del = ok("query-jobs").at(0).as_object();
  EXPECT_EQ(del.at("status"), "concluded");
  EXPECT_FALSE(del.contains("error")) << "deleting from no device is no error (QEMU)";
  EXPECT_EQ(del.at("current-progress"), 1);
}

TEST_F(monitor_fixture, quit_asks_the_process_to_exit) {
  ok("quit");
  EXPECT_TRUE(quit);
}

TEST_F(monitor_fixture, migration_commands_check_the_state_as_qemu_does) {
  EXPECT_EQ(fails("migrate-continue", {{"state", "pre-switchover"}}).desc,
            "Migration not in expected state: none");
  EXPECT_EQ(fails("migrate-pause").desc,
            "migrate-pause is currently only supported during postcopy-active state");
  EXPECT_EQ(fails("migrate-recover", {{"uri", "tcp:127.0.0.1:1"}}).desc,
            "Migrate recover can only be run when postcopy is paused.");
  EXPECT_EQ(fails("migrate-start-postcopy").desc,
            "Enable postcopy with migrate_set_capability before the start of migration");
  ok(
    "migrate-set-capabilities",
    {{"capabilities", json::array{json::object{{"capability", "postcopy-ram"}, {"state", true}}}}});
  EXPECT_EQ(fails("migrate-start-postcopy").desc,
            "Postcopy must be started after migration has been started");
  EXPECT_EQ(ok("migrate_cancel"), json::object{}) << "cancelling nothing succeeds";
  EXPECT_EQ(monitor->status(), migration_status::none);
  EXPECT_EQ(ok("query-migrate"), json::object{});
  EXPECT_TRUE(events.empty());
}

TEST_F(monitor_fixture, migration_events_follow_the_events_capability) {
  ASSERT_TRUE(monitor->migration_step(migration_event::start));
  EXPECT_TRUE(events.empty()) << "events capability off";
  EXPECT_EQ(ok("query-migrate").at("status"), "setup");
  EXPECT_EQ(
    fails("migrate-set-capabilities",
          {{"capabilities", json::array{json::object{{"capability", "events"}, {"state", true}}}}})
      .desc,
    "There's a migration process in progress");
  ASSERT_TRUE(monitor->migration_step(migration_event::cancel));
  ASSERT_TRUE(monitor->migration_step(migration_event::cancel_done));
  ok("migrate-set-capabilities",
     {{"capabilities", json::array{json::object{{"capability", "events"}, {"state", true}}}}});
  ASSERT_TRUE(monitor->migration_step(migration_event::start));
  ASSERT_TRUE(monitor->migration_step(migration_event::setup_done));
  ASSERT_TRUE(monitor->migration_step(migration_event::pause_switchover));
  EXPECT_EQ(fails("migrate-continue", {{"state", "active"}}).desc,
            "Migration not in expected state: pre-switchover");
  ok("migrate-continue", {{"state", "pre-switchover"}});
  EXPECT_EQ(monitor->status(), migration_status::device);
  ASSERT_TRUE(monitor->migration_step(migration_event::cancel));
  EXPECT_FALSE(monitor->migration_step(migration_event::complete)) << "refused in cancelling";
  EXPECT_EQ(monitor->status(), migration_status::cancelling);
  ASSERT_TRUE(monitor->migration_step(migration_event::cancel_done));
  EXPECT_EQ(statuses, (std::vector<std::string>{"setup", "active", "pre-switchover", "device",
                                                "cancelling", "cancelled"}));
  EXPECT_EQ(events.size(), statuses.size()) << "nothing but MIGRATION events";
}
