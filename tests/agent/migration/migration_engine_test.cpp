// The migration engines in one process: two -accel none guests (a host
// thread dirties the source's working set), each behind its own QMP
// monitor, migrating over real sockets. After each migration both guests
// are stopped and compared page by page, and their CPU state blobs byte by
// byte.

#include "agent/qmp/qmp_monitor.hpp"
#include "agent/transport/migration_channel.hpp"
#include "agent/transport/sockets.hpp"
#include "agent/vmm/synthetic_guest.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/wait_status.hpp"

#include <boost/json.hpp>
#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <set>
#include <thread>

using namespace ferry;
using namespace std::chrono_literals;
namespace json = boost::json;

namespace {

constexpr uint64_t ram_size = 64u << 20;

struct side {
  // Declared before the monitor so they outlive it: its threads may still
  // report an event while it shuts down.
  std::mutex mtx;
  std::vector<std::string> events;
  int exit_status = -1;
  std::unique_ptr<synthetic_guest> guest;
  std::unique_ptr<qmp_monitor> monitor;

  void create(uint64_t dirty_rate, uint64_t ws_pages, bool fill) {
    synthetic_guest_config cfg;
    cfg.memory = {memory_backend::kind::ram, ram_size, {}, false};
    cfg.ws_start = 1u << 20;
    cfg.ws_pages = ws_pages;
    cfg.dirty_rate = dirty_rate;
    auto g = synthetic_guest::create(cfg);
    ASSERT_TRUE(g);
    guest = std::move(*g);
    if (fill) {
      // Three quarters of the pages carry data, the rest stay zero.
      auto bytes = guest->memory().bytes();
      for (uint64_t p = 0; p < bytes.size() / 4096; ++p)
        if (p % 4 != 3)
          std::memset(bytes.data() + p * 4096, static_cast<int>(p * 7 + 1), 4096);
    }
    monitor = std::make_unique<qmp_monitor>(
      *guest, vm_identity{"vm", "12345678-1234-1234-1234-123456789abc"},
      [this](const std::string& line) {
        std::lock_guard lk{mtx};
        events.push_back(line);
      },
      [] {});
    monitor->set_exit_handler([this](int s) {
      std::lock_guard lk{mtx};
      exit_status = s;
    });
  }

  json::value run(const std::string& cmd, const json::object& args = {}) {
    auto r = monitor->execute(cmd, args);
    if (auto* f = std::get_if<qmp_failure>(&r))
      return json::object{{"error", f->desc}};
    return std::get<json::value>(r);
  }

  json::object info() { return run("query-migrate").as_object(); }
  std::string status() {
    const auto i = info();
    return i.contains("status") ? std::string{i.at("status").as_string()} : "none";
  }

  // Waits until query-migrate's status is one of `want` (or times out).
  std::string wait_status(std::initializer_list<const char*> want,
                          std::chrono::seconds limit = 30s) {
    return ferry::test::wait_for_status([this] { return status(); }, want, limit, 5ms);
  }

  size_t count_events(const std::string& fragment) {
    std::lock_guard lk{mtx};
    return static_cast<size_t>(std::count_if(events.begin(), events.end(), [&](const auto& e) {
      return e.find(fragment) != std::string::npos;
    }));
  }
};

struct engine_fixture : ::testing::Test {
  side src, dst;
  ferry::test::temp_dir tmp;

  void SetUp() override {
    src.create(50'000, 256, true);
    ASSERT_TRUE(src.guest->start());
  }

  uint64_t dst_ws_pages = 256; // the destination's guest must match the source's

  // Replaces the source with a guest whose dirtier rewrites a counter in
  // each of 2048 pages (8 MiB) as fast as the host lets it.
  void make_hot_source() {
    src.guest.reset();
    src.monitor.reset();
    src.create(0, 2048, true);
    ASSERT_TRUE(src.guest->start());
    dst_ws_pages = 2048;
  }

  void enable_on_source(const char* capability) {
    EXPECT_EQ(src.run("migrate-set-capabilities",
                      {{"capabilities",
                        json::array{json::object{{"capability", capability}, {"state", true}}}}}),
              json::object{});
  }

  void make_destination(const json::object& caps_and_params = {}) {
    dst.create(0, dst_ws_pages, false);
    dst.monitor->expect_incoming(false); // stay stopped: the test compares it
    for (auto* s : {&src, &dst}) {
      json::array caps{json::object{{"capability", "events"}, {"state", true}}};
      if (caps_and_params.contains("multifd"))
        caps.push_back(json::object{{"capability", "multifd"}, {"state", true}});
      EXPECT_EQ(s->run("migrate-set-capabilities", {{"capabilities", caps}}), json::object{});
      json::object params{{"max-bandwidth", 0}};
      if (const auto* n = caps_and_params.if_contains("multifd"))
        params["multifd-channels"] = *n;
      if (const auto* z = caps_and_params.if_contains("compression"))
        params["multifd-compression"] = *z;
      EXPECT_EQ(s->run("migrate-set-parameters", params), json::object{});
    }
  }

  // Both guests stopped: every page and the CPU state must be equal.
  void expect_identical() {
    auto pause = src.guest->pause();
    ASSERT_NE(dst.guest->state(), run_state::running);
    const auto a = src.guest->memory().bytes();
    const auto b = dst.guest->memory().bytes();
    ASSERT_EQ(a.size(), b.size());
    size_t bad = 0;
    for (size_t p = 0; p < a.size() / 4096; ++p)
      if (std::memcmp(a.data() + p * 4096, b.data() + p * 4096, 4096) != 0 && bad++ < 5)
        ADD_FAILURE() << "page " << p << " differs";
    EXPECT_EQ(bad, 0U);
    auto ca = src.guest->save_cpu_state();
    auto cb = dst.guest->save_cpu_state();
    ASSERT_TRUE(ca && cb);
    EXPECT_EQ(*ca, *cb) << "CPU state differs";
  }

  void migrate_and_check(std::string uri) {
    EXPECT_EQ(dst.run("migrate-incoming", {{"uri", uri}}), json::object{});
    if (uri.ends_with(":0")) // the port the destination picked
      uri = "tcp:127.0.0.1:" +
            std::string{dst.info().at("socket-address").at(0).at("port").as_string()};
    EXPECT_EQ(src.run("migrate", {{"uri", uri}}), json::object{});
    EXPECT_EQ(src.wait_status({"completed", "failed"}), "completed") << json::serialize(src.info());
    EXPECT_EQ(dst.wait_status({"completed", "failed"}), "completed") << json::serialize(dst.info());
    const auto info = src.info();
    const auto& ram = info.at("ram").as_object();
    EXPECT_EQ(ram.at("total").as_uint64(), ram_size);
    EXPECT_EQ(ram.at("remaining").as_uint64(), 0U);
    EXPECT_GE(ram.at("normal").as_uint64(), ram_size / 4096 * 3 / 4);
    EXPECT_GE(ram.at("duplicate").as_uint64(), ram_size / 4096 / 4 - 256);
    EXPECT_GE(ram.at("dirty-sync-count").as_uint64(), 2U);
    EXPECT_TRUE(info.contains("downtime"));
    EXPECT_EQ(src.run("query-status").at("status"), "postmigrate");
    EXPECT_GE(src.count_events("MIGRATION_PASS"), 1U);
    EXPECT_EQ(src.count_events(R"("status":"completed")"), 1U);
    EXPECT_EQ(dst.count_events(R"("status":"completed")"), 1U);
    expect_identical();
  }
};

TEST_F(engine_fixture, precopy_over_unix_without_multifd) {
  make_destination();
  migrate_and_check("unix:" + tmp.file("mig.sock"));
  EXPECT_EQ(src.info().at("ram").at("multifd-bytes").as_uint64(), 0U);
  EXPECT_FALSE(std::filesystem::exists(tmp.file("mig.sock"))) << "the listener's socket file stays";
}

TEST_F(engine_fixture, precopy_over_tcp_with_four_multifd_channels) {
  make_destination({{"multifd", 4}});
  migrate_and_check("tcp:127.0.0.1:0");
}

TEST_F(engine_fixture, zero_copy_send_sends_live_pages_and_counts_the_kernels_copies) {
  // A running guest dirtying its pages while they leave without a snapshot:
  // every page must still arrive as the source holds it at the end.
  make_destination({{"multifd", 2}});
  enable_on_source("zero-copy-send");
  migrate_and_check("tcp:127.0.0.1:0");
  // Over loopback the kernel copies what MSG_ZEROCOPY handed it; QEMU counts
  // that once per channel and sync.
  const auto ram = src.info().at("ram").as_object();
  const auto missed = ram.at("dirty-sync-missed-zero-copy").as_uint64();
  EXPECT_GE(missed, 1U);
  EXPECT_LE(missed, ram.at("dirty-sync-count").as_uint64() * 2);
}

TEST_F(engine_fixture, zero_page_detection_none_sends_every_page_with_its_data) {
  make_destination({{"multifd", 2}});
  EXPECT_EQ(src.run("migrate-set-parameters", {{"zero-page-detection", "none"}}), json::object{});
  const std::string uri = "unix:" + tmp.file("mig.sock");
  EXPECT_EQ(dst.run("migrate-incoming", {{"uri", uri}}), json::object{});
  EXPECT_EQ(src.run("migrate", {{"uri", uri}}), json::object{});
  EXPECT_EQ(src.wait_status({"completed", "failed"}), "completed") << json::serialize(src.info());
  EXPECT_EQ(dst.wait_status({"completed", "failed"}), "completed");
  const auto ram = src.info().at("ram").as_object();
  EXPECT_EQ(ram.at("duplicate").as_uint64(), 0U) << "no page was taken for zero";
  EXPECT_GE(ram.at("normal").as_uint64(), ram_size / 4096);
  expect_identical();
}

TEST_F(engine_fixture, zero_copy_send_needs_a_tcp_socket) {
  make_destination({{"multifd", 2}});
  enable_on_source("zero-copy-send");
  const std::string uri = "unix:" + tmp.file("mig.sock");
  EXPECT_EQ(dst.run("migrate-incoming", {{"uri", uri}, {"exit-on-error", false}}), json::object{});
  EXPECT_EQ(src.run("migrate", {{"uri", uri}}), json::object{});
  EXPECT_EQ(src.wait_status({"completed", "failed"}), "failed");
  EXPECT_EQ(std::string{src.info().at("error-desc").as_string()},
            "Zero copy send feature not detected in host kernel");
  EXPECT_EQ(src.run("query-status").at("status"), "running");
}

TEST_F(engine_fixture, multifd_with_zstd_compression) {
  make_destination({{"multifd", 2}, {"compression", "zstd"}});
  migrate_and_check("unix:" + tmp.file("mig.sock"));
  const auto ram = src.info().at("ram").as_object();
  // Each test page is one repeated byte: compressed it is a few bytes.
  EXPECT_LT(ram.at("transferred").as_uint64(), ram.at("normal-bytes").as_uint64() / 20);
}

TEST_F(engine_fixture, multifd_with_zlib_compression) {
  make_destination({{"multifd", 4}, {"compression", "zlib"}});
  EXPECT_EQ(src.run("migrate-set-parameters", {{"multifd-zlib-level", 2}}), json::object{});
  migrate_and_check("tcp:127.0.0.1:0");
  const auto ram = src.info().at("ram").as_object();
  EXPECT_LT(ram.at("transferred").as_uint64(), ram.at("normal-bytes").as_uint64() / 20);
}

TEST_F(engine_fixture, compression_must_match_on_both_sides) {
  make_destination({{"multifd", 2}, {"compression", "zstd"}});
  EXPECT_EQ(src.run("migrate-set-parameters", {{"multifd-compression", "zlib"}}), json::object{});
  const std::string uri = "unix:" + tmp.file("mig.sock");
  EXPECT_EQ(dst.run("migrate-incoming", {{"uri", uri}, {"exit-on-error", false}}), json::object{});
  EXPECT_EQ(src.run("migrate", {{"uri", uri}}), json::object{});
  EXPECT_EQ(src.wait_status({"completed", "failed"}), "failed");
  // The source may hear the refusal before the destination has recorded it.
  EXPECT_EQ(dst.wait_status({"failed"}), "failed");
  EXPECT_EQ(std::string{dst.info().at("error-desc").as_string()},
            "multifd-compression differs: source zlib, destination zstd");
}

TEST_F(engine_fixture, tcp_port_zero_is_reported_in_socket_address) {
  make_destination();
  EXPECT_EQ(dst.run("migrate-incoming", {{"uri", "tcp:127.0.0.1:0"}}), json::object{});
  const auto info = dst.info();
  EXPECT_EQ(info.at("status"), "setup");
  const auto& addr = info.at("socket-address").as_array().at(0).as_object();
  EXPECT_EQ(addr.at("type"), "inet");
  const std::string port{addr.at("port").as_string()};
  EXPECT_NE(port, "0");
  EXPECT_EQ(
    src.run(
      "migrate",
      {{"channels",
        json::array{json::object{
          {"channel-type", "main"},
          {"addr",
           {{"transport", "socket"}, {"type", "inet"}, {"host", "127.0.0.1"}, {"port", port}}}}}}}),
    json::object{});
  EXPECT_EQ(src.wait_status({"completed", "failed"}), "completed");
  EXPECT_EQ(dst.wait_status({"completed", "failed"}), "completed");
  expect_identical();
}

// QEMU closes its listener once the channels are in; a destination that
// kept it would hold its port (and its host's port range) as long as the
// guest lives.
TEST_F(engine_fixture, a_destination_gives_its_address_back_once_the_channels_are_in) {
  make_destination({{"multifd", 2}});
  EXPECT_EQ(dst.run("migrate-incoming", {{"uri", "tcp:127.0.0.1:0"}}), json::object{});
  const std::string uri =
    "tcp:127.0.0.1:" + std::string{dst.info().at("socket-address").at(0).at("port").as_string()};
  const auto addr = std::get<migration_address>(parse_migration_uri(uri));
  EXPECT_FALSE(migration_listener::create(addr)) << "the port is taken while it listens";
  EXPECT_EQ(src.run("migrate", {{"uri", uri}}), json::object{});
  EXPECT_EQ(src.wait_status({"completed", "failed"}), "completed");
  EXPECT_EQ(dst.wait_status({"completed", "failed"}), "completed");
  expect_identical();
  EXPECT_TRUE(migration_listener::create(addr)) << "the finished destination still holds " << uri;
}

// QEMU carries the source's run state: a guest paused there stays paused
// on the destination even without -S (until cont); a running one runs.
TEST_F(engine_fixture, a_paused_guest_arrives_paused_even_without_dash_s) {
  EXPECT_EQ(src.run("stop"), json::object{});
  make_destination();
  dst.monitor->expect_incoming(true); // no -S
  const std::string uri = "unix:" + tmp.file("mig.sock");
  EXPECT_EQ(dst.run("migrate-incoming", {{"uri", uri}}), json::object{});
  EXPECT_EQ(src.run("migrate", {{"uri", uri}}), json::object{});
  EXPECT_EQ(src.wait_status({"completed", "failed"}), "completed");
  EXPECT_EQ(dst.wait_status({"completed", "failed"}), "completed");
  EXPECT_EQ(src.run("query-status").at("status"), "postmigrate");
  expect_identical();
  EXPECT_EQ(dst.run("query-status"), (json::object{{"status", "paused"}, {"running", false}}));
  EXPECT_EQ(dst.count_events(R"("event":"RESUME")"), 0U);
  EXPECT_EQ(dst.run("cont"), json::object{});
  EXPECT_EQ(dst.guest->state(), run_state::running);
  EXPECT_EQ(dst.count_events(R"("event":"RESUME")"), 1U);
}

TEST_F(engine_fixture, a_running_guest_runs_on_the_destination) {
  make_destination();
  dst.monitor->expect_incoming(true);
  const std::string uri = "unix:" + tmp.file("mig.sock");
  EXPECT_EQ(dst.run("migrate-incoming", {{"uri", uri}}), json::object{});
  EXPECT_EQ(src.run("migrate", {{"uri", uri}}), json::object{});
  EXPECT_EQ(src.wait_status({"completed", "failed"}), "completed");
  EXPECT_EQ(dst.wait_status({"completed", "failed"}), "completed");
  EXPECT_EQ(dst.run("query-status"), (json::object{{"status", "running"}, {"running", true}}));
  EXPECT_EQ(dst.count_events(R"("event":"RESUME")"), 1U);
  // The destination's dirtier runs on in its working set; every other page
  // is as the source left it.
  auto pause = dst.guest->pause();
  const auto a = src.guest->memory().bytes();
  const auto b = dst.guest->memory().bytes();
  size_t bad = 0;
  for (size_t p = 0; p < a.size() / 4096; ++p) {
    const bool in_ws = p >= (1u << 20) / 4096 && p < (1u << 20) / 4096 + dst_ws_pages;
    if (!in_ws && std::memcmp(a.data() + p * 4096, b.data() + p * 4096, 4096) != 0)
      ++bad;
  }
  EXPECT_EQ(bad, 0U);
}

TEST_F(engine_fixture, file_save_then_restore) {
  make_destination();
  const std::string path = tmp.file("vm.state");
  EXPECT_EQ(src.run("stop"), json::object{});
  EXPECT_EQ(src.run("migrate", {{"uri", "file:" + path + ",offset=4096"}}), json::object{});
  EXPECT_EQ(src.wait_status({"completed", "failed"}), "completed") << json::serialize(src.info());
  EXPECT_EQ(dst.run("migrate-incoming", {{"uri", "file:" + path + ",offset=4096"}}),
            json::object{});
  EXPECT_EQ(dst.wait_status({"completed", "failed"}), "completed") << json::serialize(dst.info());
  expect_identical();
}

TEST_F(engine_fixture, exec_pipes_the_stream_through_commands) {
  make_destination();
  const std::string path = tmp.file("vm.state.gz");
  EXPECT_EQ(src.run("migrate", {{"uri", "exec:gzip -1 > " + path}}), json::object{});
  EXPECT_EQ(src.wait_status({"completed", "failed"}), "completed") << json::serialize(src.info());
  EXPECT_EQ(dst.run("migrate-incoming", {{"uri", "exec:gzip -dc " + path}}), json::object{});
  EXPECT_EQ(dst.wait_status({"completed", "failed"}), "completed") << json::serialize(dst.info());
  expect_identical();
}

TEST_F(engine_fixture, unreachable_destination_fails_and_the_source_runs_on) {
  EXPECT_EQ(src.run("migrate", {{"uri", "unix:" + tmp.file("nobody.sock")}}), json::object{});
  EXPECT_EQ(src.wait_status({"completed", "failed"}), "failed");
  const auto info = src.info();
  EXPECT_NE(std::string{info.at("error-desc").as_string()}.find("Failed to connect"),
            std::string::npos)
    << json::serialize(info);
  EXPECT_EQ(src.run("query-status").at("status"), "running");
}

TEST_F(engine_fixture, capability_mismatch_fails_both_sides_with_the_reason) {
  make_destination({{"multifd", 2}});
  const std::string uri = "unix:" + tmp.file("mig.sock");
  EXPECT_EQ(dst.run("migrate-incoming", {{"uri", uri}, {"exit-on-error", false}}), json::object{});
  EXPECT_EQ(src.run("migrate-set-capabilities",
                    {{"capabilities",
                      json::array{json::object{{"capability", "multifd"}, {"state", false}}}}}),
            json::object{});
  EXPECT_EQ(src.run("migrate", {{"uri", uri}}), json::object{});
  EXPECT_EQ(src.wait_status({"completed", "failed"}), "failed");
  EXPECT_EQ(dst.wait_status({"completed", "failed"}), "failed");
  const std::string why = "capability multifd is off on the source but on on the destination";
  EXPECT_NE(std::string{src.info().at("error-desc").as_string()}.find(why), std::string::npos);
  EXPECT_EQ(std::string{dst.info().at("error-desc").as_string()}, why);
  EXPECT_EQ(dst.exit_status, -1) << "exit-on-error false keeps the destination";
  EXPECT_EQ(src.run("query-status").at("status"), "running");
}

TEST_F(engine_fixture, cancel_leaves_the_source_running_and_migratable) {
  make_destination();
  const std::string uri = "unix:" + tmp.file("mig.sock");
  // 8 MiB/s: the first pass alone takes seconds, plenty of time to cancel.
  EXPECT_EQ(src.run("migrate-set-parameters", {{"max-bandwidth", 8u << 20}}), json::object{});
  EXPECT_EQ(dst.run("migrate-incoming", {{"uri", uri}, {"exit-on-error", false}}), json::object{});
  EXPECT_EQ(src.run("migrate", {{"uri", uri}}), json::object{});
  EXPECT_EQ(src.wait_status({"active"}), "active");
  std::this_thread::sleep_for(200ms);
  EXPECT_EQ(src.run("migrate", {{"uri", uri}}).at("error"),
            "There's a migration process in progress");
  EXPECT_EQ(src.run("migrate_cancel"), json::object{});
  EXPECT_EQ(src.wait_status({"cancelled"}, 10s), "cancelled");
  EXPECT_EQ(dst.wait_status({"failed"}, 10s), "failed");
  EXPECT_EQ(src.run("query-status").at("status"), "running");
  EXPECT_EQ(src.run("migrate_cancel"), json::object{}) << "cancelling again does nothing";
  EXPECT_EQ(src.status(), "cancelled");

  // Migratable again, to a fresh destination.
  dst.monitor.reset();
  make_destination();
  EXPECT_EQ(src.run("migrate-set-parameters", {{"max-bandwidth", 0}}), json::object{});
  migrate_and_check("unix:" + tmp.file("mig2.sock"));
}

TEST_F(engine_fixture, pause_before_switchover_waits_for_migrate_continue) {
  make_destination();
  EXPECT_EQ(
    src.run("migrate-set-capabilities",
            {{"capabilities", json::array{json::object{{"capability", "pause-before-switchover"},
                                                       {"state", true}}}}}),
    json::object{});
  const std::string uri = "unix:" + tmp.file("mig.sock");
  EXPECT_EQ(dst.run("migrate-incoming", {{"uri", uri}}), json::object{});
  EXPECT_EQ(src.run("migrate", {{"uri", uri}}), json::object{});
  EXPECT_EQ(src.wait_status({"pre-switchover", "failed"}), "pre-switchover");
  EXPECT_EQ(src.run("query-status").at("status"), "finish-migrate");
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(src.status(), "pre-switchover") << "it waits";
  EXPECT_EQ(src.run("migrate-continue", {{"state", "pre-switchover"}}), json::object{});
  EXPECT_EQ(src.wait_status({"completed", "failed"}), "completed");
  EXPECT_EQ(dst.wait_status({"completed", "failed"}), "completed");
  expect_identical();
}

TEST_F(engine_fixture, a_hot_guest_keeps_iterating_until_cancelled) {
  // Dirtying as fast as the host can, a 1 ms downtime-limit and a slow
  // link: it never converges.
  make_hot_source();
  make_destination();
  EXPECT_EQ(
    src.run("migrate-set-parameters", {{"downtime-limit", 1}, {"max-bandwidth", 64u << 20}}),
    json::object{});
  const std::string uri = "unix:" + tmp.file("mig.sock");
  EXPECT_EQ(dst.run("migrate-incoming", {{"uri", uri}, {"exit-on-error", false}}), json::object{});
  EXPECT_EQ(src.run("migrate", {{"uri", uri}}), json::object{});
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  while (src.info().at("ram").at("dirty-sync-count").as_uint64() < 5 &&
         std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(10ms);
  const auto info = src.info();
  EXPECT_EQ(info.at("status"), "active");
  EXPECT_GE(info.at("ram").at("dirty-sync-count").as_uint64(), 5U);
  EXPECT_GT(info.at("expected-downtime").as_uint64(), 1U);
  std::set<std::string> names;
  const auto threads = src.run("query-migrationthreads");
  for (const auto& t : threads.as_array()) {
    names.insert(std::string{t.at("name").as_string()});
    EXPECT_GT(t.at("thread-id").as_int64(), 0);
  }
  EXPECT_EQ(names, (std::set<std::string>{"mig-source", "mig-send"}));
  EXPECT_EQ(dst.run("query-migrationthreads").as_array().size(), 1U) << "mig-incoming";
  EXPECT_EQ(src.run("migrate_cancel"), json::object{});
  EXPECT_EQ(src.wait_status({"cancelled"}, 10s), "cancelled");
  EXPECT_EQ(src.run("query-migrationthreads"), json::array{}) << "they have ended";
  EXPECT_EQ(src.run("query-status").at("status"), "running");
}

} // namespace

namespace {

TEST_F(engine_fixture, a_malformed_stream_fails_the_destination_cleanly) {
  make_destination();
  const std::string path = tmp.file("mig.sock");
  EXPECT_EQ(dst.run("migrate-incoming", {{"uri", "unix:" + path}, {"exit-on-error", false}}),
            json::object{});
  auto ch = open_outgoing(std::get<migration_address>(parse_migration_uri("unix:" + path)));
  ASSERT_TRUE(ch);
  // A well-framed hello from a stream version this agent does not read.
  mig::hello h;
  h.ram_size = ram_size;
  auto bytes = mig::encode(h);
  bytes[8] = 77;
  ASSERT_TRUE((*ch)->send(mig::record_type::hello, bytes));
  EXPECT_EQ(dst.wait_status({"failed"}), "failed");
  EXPECT_NE(
    std::string{dst.info().at("error-desc").as_string()}.find("stream version 77 is not supported"),
    std::string::npos)
    << json::serialize(dst.info());
  EXPECT_EQ(dst.guest->state(), run_state::prelaunch) << "nothing started";
  EXPECT_EQ(dst.exit_status, -1);
}

TEST_F(engine_fixture, garbage_instead_of_a_header_fails_with_exit_on_error) {
  make_destination();
  const std::string path = tmp.file("mig.sock");
  EXPECT_EQ(dst.run("migrate-incoming", {{"uri", "unix:" + path}}), json::object{});
  endpoint ep;
  ep.path = path;
  auto fd = connect_to(ep);
  ASSERT_TRUE(fd);
  // Something that is no migration stream at all.
  const std::string junk = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
  ASSERT_EQ(::write(fd->get(), junk.data(), junk.size()), static_cast<ssize_t>(junk.size()));
  EXPECT_EQ(dst.wait_status({"failed"}), "failed");
  EXPECT_NE(std::string{dst.info().at("error-desc").as_string()}.find("migration stream"),
            std::string::npos)
    << json::serialize(dst.info());
  EXPECT_EQ(dst.exit_status, 1) << "exit-on-error is QEMU's default";
}

} // namespace

namespace {

// Migration TLS credentials made by the shipped PKI script.
std::string make_pki(const std::string& dir, const std::string& options = "") {
  const std::string cmd =
    "bash " FERRY_SOURCE_DIR "/deploy/pki/ferry-pki.sh " + dir + " " + options + " >/dev/null";
  EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
  return dir;
}

struct tls_fixture : engine_fixture {
  std::string good = make_pki(tmp.file("pki"));

  void use_tls(side& s, const std::string& dir, bool server, json::object extra = {}) {
    std::vector<authz_object> authz;
    if (const auto* id = extra.if_contains("identity")) {
      authz.push_back({"auth0", std::string{id->as_string()}});
      extra.erase("identity");
      extra["tls-authz"] = "auth0";
    }
    s.monitor->set_objects({{"tls0", dir, server, true}}, authz);
    extra["tls-creds"] = "tls0";
    EXPECT_EQ(s.run("migrate-set-parameters", extra), json::object{});
  }

  // A migration that must fail on the source with `fragment` in error-desc,
  // leaving the source running.
  void expect_failure(const std::string& uri, const std::string& fragment) {
    EXPECT_EQ(dst.run("migrate-incoming", {{"uri", uri}, {"exit-on-error", false}}),
              json::object{});
    std::string target = uri;
    if (uri.ends_with(":0"))
      target = "tcp:127.0.0.1:" +
               std::string{dst.info().at("socket-address").at(0).at("port").as_string()};
    EXPECT_EQ(src.run("migrate", {{"uri", target}}), json::object{});
    EXPECT_EQ(src.wait_status({"completed", "failed"}), "failed");
    const std::string desc{src.info().at("error-desc").as_string()};
    EXPECT_NE(desc.find(fragment), std::string::npos) << desc;
    std::printf("error-desc: %s\n", desc.c_str());
    EXPECT_EQ(dst.wait_status({"failed"}), "failed");
    EXPECT_EQ(src.run("query-status").at("status"), "running");
  }
};

TEST_F(tls_fixture, tls_on_four_multifd_channels_with_authz) {
  make_destination({{"multifd", 4}});
  use_tls(src, good, false);
  use_tls(dst, good, true, {{"identity", "CN=ferry-migration-client,O=Ferry"}});
  migrate_and_check("tcp:127.0.0.1:0"); // the certificate names IP 127.0.0.1
}

TEST_F(tls_fixture, tls_with_zstd_over_unix_checks_tls_hostname) {
  make_destination({{"multifd", 2}, {"compression", "zstd"}});
  use_tls(src, good, false, {{"tls-hostname", "localhost"}});
  use_tls(dst, good, true);
  migrate_and_check("unix:" + tmp.file("mig.sock"));
}

TEST_F(tls_fixture, unix_without_tls_hostname_is_refused_up_front) {
  make_destination();
  use_tls(src, good, false);
  EXPECT_EQ(
    std::string{
      src.run("migrate", {{"uri", "unix:" + tmp.file("m.sock")}}).at("error").as_string()},
    "tls-hostname is required for TLS over a unix: socket (the URI names no host to "
    "check the certificate against)");
  use_tls(src, good, true); // server credentials on the source
  EXPECT_EQ(src.run("migrate", {{"uri", "tcp:127.0.0.1:1"}}).at("error"),
            "Expected TLS credentials for a client endpoint");
}

// Credentials are read when the objects are set (as QEMU reads them when
// the object is created), never again by a migration: one that names files
// that could not be read fails with the file's name; files removed later no
// longer matter.
TEST_F(tls_fixture, credentials_are_read_once_when_the_objects_are_set) {
  make_destination({{"multifd", 2}});
  use_tls(src, tmp.file("no-such-pki"), false);
  const auto refused = src.run("migrate", {{"uri", "tcp:127.0.0.1:1"}});
  ASSERT_TRUE(refused.as_object().contains("error")) << json::serialize(refused);
  const std::string why{refused.at("error").as_string()};
  EXPECT_NE(why.find("no-such-pki/ca-cert.pem"), std::string::npos) << why;
  const std::string copy = make_pki(tmp.file("pki-copy"));
  use_tls(src, copy, false);
  use_tls(dst, copy, true);
  std::filesystem::remove_all(copy);
  migrate_and_check("tcp:127.0.0.1:0");
}

TEST_F(tls_fixture, wrong_ca_fails_with_the_reason) {
  make_destination();
  use_tls(src, good, false);
  use_tls(dst, make_pki(tmp.file("other-pki")), true);
  // The destination presents a chain ending in a CA the source does not know.
  expect_failure("tcp:127.0.0.1:0",
                 "its certificate: self-signed certificate in certificate chain");
}

TEST_F(tls_fixture, expired_client_certificate_fails_with_the_reason) {
  make_destination();
  use_tls(src, make_pki(tmp.file("expired"), "--ca " + good + " --expired"), false,
          {{"tls-hostname", "localhost"}});
  // The source checks the destination's (valid) certificate against its CA
  // copy; the destination refuses the source's expired one.
  use_tls(dst, good, true);
  expect_failure("tcp:127.0.0.1:0", "certificate expired");
  EXPECT_NE(std::string{dst.info().at("error-desc").as_string()}.find("certificate has expired"),
            std::string::npos)
    << json::serialize(dst.info());
}

TEST_F(tls_fixture, hostname_mismatch_fails_with_the_reason) {
  make_destination();
  use_tls(src, good, false, {{"tls-hostname", "wrong.example"}});
  use_tls(dst, good, true);
  expect_failure("tcp:127.0.0.1:0", "Certificate does not match the hostname wrong.example");
}

// A pinned peer (tls-authz): the source with another identity is told why
// and fails; the destination keeps waiting for the peer it admits (Ferry
// drops intruders instead of failing the incoming migration, unlike QEMU).
TEST_F(tls_fixture, authz_dn_mismatch_fails_the_source_with_the_reason_and_the_port_waits_on) {
  make_destination();
  use_tls(src, good, false);
  use_tls(dst, good, true, {{"identity", "CN=someone-else,O=Ferry"}});
  EXPECT_EQ(dst.run("migrate-incoming", {{"uri", "tcp:127.0.0.1:0"}, {"exit-on-error", false}}),
            json::object{});
  const std::string target =
    "tcp:127.0.0.1:" + std::string{dst.info().at("socket-address").at(0).at("port").as_string()};
  EXPECT_EQ(src.run("migrate", {{"uri", target}}), json::object{});
  EXPECT_EQ(src.wait_status({"completed", "failed"}), "failed");
  const std::string desc{src.info().at("error-desc").as_string()};
  EXPECT_NE(desc.find("TLS x509 authz check for CN=ferry-migration-client,O=Ferry is denied"),
            std::string::npos)
    << desc;
  EXPECT_EQ(src.run("query-status").at("status"), "running");
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_EQ(dst.info().at("status"), "setup") << "the port still waits for its peer";
  EXPECT_EQ(dst.run("migrate_cancel"), json::object{}); // fences it: over
  const auto end = dst.wait_status({"cancelled", "failed"});
  EXPECT_TRUE(end == "cancelled" || end == "failed") << end;
}

} // namespace

namespace {

TEST_F(engine_fixture, auto_converge_throttles_a_hot_guest_until_it_converges) {
  make_hot_source();
  make_destination();
  const json::object slow_link{{"downtime-limit", 50},
                               {"max-bandwidth", 64u << 20},
                               {"cpu-throttle-initial", 60},
                               {"cpu-throttle-increment", 20}};
  EXPECT_EQ(src.run("migrate-set-parameters", slow_link), json::object{});

  // Without auto-converge it keeps iterating.
  const std::string uri1 = "unix:" + tmp.file("mig1.sock");
  EXPECT_EQ(dst.run("migrate-incoming", {{"uri", uri1}, {"exit-on-error", false}}), json::object{});
  EXPECT_EQ(src.run("migrate", {{"uri", uri1}}), json::object{});
  auto deadline = std::chrono::steady_clock::now() + 20s;
  while (src.info().at("ram").at("dirty-sync-count").as_uint64() < 8 &&
         std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(10ms);
  EXPECT_EQ(src.status(), "active");
  EXPECT_FALSE(src.info().contains("cpu-throttle-percentage"));
  EXPECT_EQ(src.run("migrate_cancel"), json::object{});
  EXPECT_EQ(src.wait_status({"cancelled"}, 10s), "cancelled");

  // With it, the guest is slowed down until the rest fits the downtime.
  dst.monitor.reset();
  make_destination();
  EXPECT_EQ(src.run("migrate-set-parameters", slow_link), json::object{});
  enable_on_source("auto-converge");
  const std::string uri2 = "unix:" + tmp.file("mig2.sock");
  EXPECT_EQ(dst.run("migrate-incoming", {{"uri", uri2}}), json::object{});
  EXPECT_EQ(src.run("migrate", {{"uri", uri2}}), json::object{});
  uint64_t max_pct = 0;
  deadline = std::chrono::steady_clock::now() + 60s;
  std::string s = "active";
  while ((s == "active" || s == "setup") && std::chrono::steady_clock::now() < deadline) {
    const auto info = src.info();
    s = std::string{info.at("status").as_string()};
    if (const auto* pct = info.if_contains("cpu-throttle-percentage"))
      max_pct = std::max(max_pct, pct->as_uint64());
    std::this_thread::sleep_for(5ms);
  }
  EXPECT_EQ(src.wait_status({"completed", "failed"}), "completed") << json::serialize(src.info());
  EXPECT_EQ(dst.wait_status({"completed", "failed"}), "completed") << json::serialize(dst.info());
  EXPECT_GE(max_pct, 60U) << "cpu-throttle-percentage was reported";
  std::printf("auto-converge: throttle reached %llu%%, %s\n",
              static_cast<unsigned long long>(max_pct), json::serialize(src.info()).c_str());
  expect_identical();
}

} // namespace

namespace {

TEST_F(engine_fixture, xbzrle_sends_dirtied_pages_as_deltas) {
  make_hot_source();
  make_destination();
  // Never converges at 0 ms: passes go on until the test lets it finish.
  EXPECT_EQ(src.run("migrate-set-parameters", {{"downtime-limit", 0},
                                               {"max-bandwidth", 256u << 20},
                                               {"xbzrle-cache-size", 8u << 20}}),
            json::object{});
  enable_on_source("xbzrle");
  const std::string uri = "unix:" + tmp.file("mig.sock");
  EXPECT_EQ(dst.run("migrate-incoming", {{"uri", uri}}), json::object{});
  EXPECT_EQ(src.run("migrate", {{"uri", uri}}), json::object{});
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  auto xbz = [&] { return src.info().at("xbzrle-cache").as_object(); };
  // Rates cover the last whole pass: wait for one that sent deltas. (A sync
  // that finds nothing dirty ends it anyway, as in QEMU: a dirtier kept off
  // the CPU for a whole pass by a loaded host can do that.)
  // "setup" counts as under way: a slow start (a sanitizer build) must not
  // read as finished and leave downtime-limit at 0 for ever.
  auto under_way = [&] {
    const auto s = src.status();
    return s == "setup" || s == "active";
  };
  while ((xbz().at("pages").as_uint64() < 1000 || xbz().at("encoding-rate").as_double() == 0) &&
         under_way() && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(5ms);
  auto stats = xbz();
  const bool still_active = under_way();
  if (still_active) {
    // The cache can be resized live (from the next pass), then let it finish.
    EXPECT_EQ(stats.at("cache-size").as_uint64(), 8u << 20);
    EXPECT_EQ(src.run("migrate-set-cache-size", {{"value", 1u << 20}}), json::object{});
    EXPECT_EQ(xbz().at("cache-size").as_uint64(), 1u << 20);
    EXPECT_EQ(src.run("migrate-set-parameters", {{"downtime-limit", 300}}), json::object{});
  }
  EXPECT_EQ(src.wait_status({"completed", "failed"}), "completed") << json::serialize(src.info());
  if (!still_active)
    stats = xbz();
  std::printf("xbzrle (%s): %s\n", still_active ? "during" : "after",
              json::serialize(stats).c_str());
  EXPECT_GT(stats.at("pages").as_uint64(), 0U);
  EXPECT_GE(stats.at("cache-miss").as_uint64(), 256U) << "the second pass fills the cache";
  // The guest changes 4 bytes per page: a delta is a small fraction of it.
  EXPECT_LT(stats.at("bytes").as_uint64(), stats.at("pages").as_uint64() * 64);
  EXPECT_GT(stats.at("encoding-rate").as_double(), 50.0);
  EXPECT_LT(stats.at("cache-miss-rate").as_double(), 0.5);
  EXPECT_EQ(stats.at("overflow").as_uint64(), 0U);
  EXPECT_EQ(dst.wait_status({"completed", "failed"}), "completed") << json::serialize(dst.info());
  expect_identical();
}

TEST_F(engine_fixture, xbzrle_pages_that_changed_a_lot_overflow_and_go_whole) {
  // A guest whose writes scatter over whole pages defeats deltas: here the
  // test itself scribbles over pages outside the (flat-out, so never idle)
  // dirtier's working set.
  make_hot_source();
  make_destination();
  EXPECT_EQ(
    src.run("migrate-set-parameters", {{"downtime-limit", 0}, {"max-bandwidth", 256u << 20}}),
    json::object{});
  enable_on_source("xbzrle");
  const std::string uri = "unix:" + tmp.file("mig.sock");
  EXPECT_EQ(dst.run("migrate-incoming", {{"uri", uri}}), json::object{});
  EXPECT_EQ(src.run("migrate", {{"uri", uri}}), json::object{});
  auto bytes = src.guest->memory().bytes();
  uint8_t salt = 1;
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  auto xbz = [&] { return src.info().at("xbzrle-cache").as_object(); };
  while (xbz().at("overflow").as_uint64() < 100 && std::chrono::steady_clock::now() < deadline) {
    // Pages 8192.. get new bytes at every other position: too many runs
    // for a delta to pay.
    for (size_t p = 8192; p < 8192 + 128; ++p) {
      for (size_t i = 0; i < 4096; i += 2)
        bytes[p * 4096 + i] = static_cast<uint8_t>(salt + i);
      src.guest->host_writes().mark_page(p);
    }
    ++salt;
    std::this_thread::sleep_for(2ms);
  }
  EXPECT_GE(xbz().at("overflow").as_uint64(), 100U);
  EXPECT_EQ(src.run("migrate-set-parameters", {{"downtime-limit", 300}}), json::object{});
  EXPECT_EQ(src.wait_status({"completed", "failed"}), "completed") << json::serialize(src.info());
  EXPECT_EQ(dst.wait_status({"completed", "failed"}), "completed") << json::serialize(dst.info());
  expect_identical();
}

} // namespace
