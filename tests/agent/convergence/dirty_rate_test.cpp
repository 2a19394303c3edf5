// calc-dirty-rate / query-dirty-rate on -accel none guests: a dirtier at a
// known pace over a working set larger than it covers in the period, so the
// truth is pace x page size. (KVM's dirty-ring mode: migration_process_test.)

#include "agent/qmp/qmp_monitor.hpp"
#include "agent/vmm/synthetic_guest.hpp"

#include <boost/json.hpp>
#include <gtest/gtest.h>

#include <chrono>
#include <thread>

using namespace ferry;
using namespace std::chrono_literals;
namespace json = boost::json;

namespace {

constexpr uint64_t pace = 20000; // pages per second

struct dirty_rate_fixture : ::testing::Test {
  std::unique_ptr<synthetic_guest> guest;
  std::unique_ptr<qmp_monitor> monitor;

  void SetUp() override {
    synthetic_guest_config cfg;
    // 1 GiB (sparse): page sampling has plenty of pages to pick from.
    cfg.memory = {memory_backend::kind::ram, 1ull << 30, {}, false};
    cfg.ws_start = 1u << 20;
    cfg.ws_pages = 65536; // 256 MiB: more than 3 s of dirtying at this pace
    cfg.dirty_rate = pace;
    auto g = synthetic_guest::create(cfg);
    ASSERT_TRUE(g);
    guest = std::move(*g);
    ASSERT_TRUE(guest->start());
    monitor = std::make_unique<qmp_monitor>(
      *guest, vm_identity{"vm", "12345678-1234-1234-1234-123456789abc"}, [](const std::string&) {},
      [] {});
  }

  std::string run(const std::string& cmd, const json::object& args = {}) {
    auto r = monitor->execute(cmd, args);
    if (auto* f = std::get_if<qmp_failure>(&r))
      return f->desc;
    return json::serialize(std::get<json::value>(r));
  }

  json::object query(const json::object& args = {}) {
    auto r = monitor->execute("query-dirty-rate", args);
    return std::get<json::value>(r).as_object();
  }

  json::object wait_measured() {
    const auto deadline = std::chrono::steady_clock::now() + 20s;
    while (query().at("status") == "measuring" && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(10ms);
    return query();
  }

  // The rate a measurement reports, next to the truth.
  void expect_close_to_truth(const json::object& args) {
    ASSERT_EQ(run("calc-dirty-rate", args), "{}");
    EXPECT_EQ(query().at("status"), "measuring");
    const auto info = wait_measured();
    ASSERT_EQ(info.at("status"), "measured") << json::serialize(info);
    const double truth = static_cast<double>(pace * 4096) / (1 << 20); // 78 MiB/s
    const auto rate = static_cast<double>(info.at("dirty-rate").as_int64());
    std::printf("%s: %.0f MiB/s (truth %.1f)\n", json::serialize(args).c_str(), rate, truth);
    EXPECT_NEAR(rate, truth, truth * 0.25) << json::serialize(info);
  }
};

} // namespace

TEST_F(dirty_rate_fixture, before_any_measurement_the_status_is_unstarted) {
  const auto info = query();
  EXPECT_EQ(info.at("status"), "unstarted");
  EXPECT_FALSE(info.contains("dirty-rate"));
  EXPECT_EQ(info.at("calc-time-unit"), "second");
}

TEST_F(dirty_rate_fixture, page_sampling_is_within_a_quarter_of_the_truth) {
  expect_close_to_truth({{"calc-time", 1}, {"sample-pages", 16384}});
  const auto info = query();
  EXPECT_EQ(info.at("mode"), "page-sampling");
  EXPECT_EQ(info.at("sample-pages"), 16384);
  EXPECT_EQ(info.at("calc-time"), 1);
  EXPECT_GT(info.at("start-time").as_int64(), 1'700'000'000) << "seconds since the epoch";
  EXPECT_FALSE(info.contains("vcpu-dirty-rate"));
}

TEST_F(dirty_rate_fixture, dirty_bitmap_counts_the_pages_written_in_milliseconds) {
  expect_close_to_truth(
    {{"calc-time", 800}, {"calc-time-unit", "millisecond"}, {"mode", "dirty-bitmap"}});
  EXPECT_EQ(query().at("calc-time"), 0) << "0.8 s rounded down";
  const auto ms = query({{"calc-time-unit", "millisecond"}});
  EXPECT_EQ(ms.at("calc-time"), 800);
  EXPECT_EQ(ms.at("calc-time-unit"), "millisecond");
  EXPECT_EQ(ms.at("mode"), "dirty-bitmap");
}

TEST_F(dirty_rate_fixture, bad_requests_are_refused_as_qemu_refuses_them) {
  EXPECT_EQ(run("calc-dirty-rate", {{"calc-time", 0}}),
            "Calculation time is out of range [50ms, 60000ms].");
  EXPECT_EQ(run("calc-dirty-rate", {{"calc-time", 61}}),
            "Calculation time is out of range [50ms, 60000ms].");
  EXPECT_EQ(run("calc-dirty-rate", {{"calc-time", 49}, {"calc-time-unit", "millisecond"}}),
            "Calculation time is out of range [50ms, 60000ms].");
  EXPECT_EQ(run("calc-dirty-rate", {{"calc-time", 1}, {"sample-pages", 100}}),
            "sample-pages is out of range[128, 16384].");
  EXPECT_EQ(
    run("calc-dirty-rate", {{"calc-time", 1}, {"mode", "dirty-bitmap"}, {"sample-pages", 512}}),
    "sample-pages is used only in page-sampling mode");
  EXPECT_EQ(run("calc-dirty-rate", {{"calc-time", 1}, {"mode", "dirty-ring"}}),
            "mode dirty-ring is not enabled, use other method instead.");
  EXPECT_EQ(run("calc-dirty-rate", {{"calc-time", 1}, {"mode", "fast"}}).find("Parameter 'mode'"),
            0U);
  EXPECT_EQ(query().at("status"), "unstarted") << "nothing was started";

  ASSERT_EQ(run("calc-dirty-rate", {{"calc-time", 2}, {"mode", "dirty-bitmap"}}), "{}");
  EXPECT_EQ(run("calc-dirty-rate", {{"calc-time", 1}}),
            "the dirty rate is already being measured.");
  // The bitmap measurement holds the dirty log a migration would need.
  EXPECT_NE(run("migrate", {{"uri", "unix:/nonexistent/ferry.sock"}}).find("holds the dirty log"),
            std::string::npos);
}
