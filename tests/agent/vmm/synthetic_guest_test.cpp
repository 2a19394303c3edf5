#include "agent/vmm/synthetic_guest.hpp"
#include "common/error.hpp"
#include "tools/testguest/pattern_file.hpp"
#include "tools/testguest/verifier.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <thread>

using namespace ferry;
using namespace std::chrono_literals;

namespace {

testguest::guest_params params() {
  testguest::guest_params p;
  p.ram_top = 8u << 20;
  p.ws_start = 2u << 20;
  p.ws_pages = 256;
  return p;
}

// A -accel none guest whose RAM holds the test pattern and boot sector, so the
// verifier reads it exactly like a KVM test guest's.
std::unique_ptr<synthetic_guest> make(uint64_t rate) {
  synthetic_guest_config cfg;
  cfg.memory = {memory_backend::kind::ram, 8u << 20, {}, false};
  auto img = testguest::builtin_image();
  cfg.boot_sector.assign(img.begin(), img.end());
  EXPECT_TRUE(testguest::write_params(cfg.boot_sector, params()));
  cfg.ws_start = params().ws_start;
  cfg.ws_pages = params().ws_pages;
  cfg.dirty_rate = rate;
  auto g = synthetic_guest::create(std::move(cfg));
  EXPECT_TRUE(g) << describe(g.error());
  testguest::fill_pattern(g->get()->memory().bytes(), params());
  return std::move(*g);
}

} // namespace

TEST(synthetic_guest, dirties_its_working_set_through_the_software_log) {
  auto g = make(0);
  EXPECT_EQ(g->state(), run_state::prelaunch);
  EXPECT_EQ(g->accelerator(), "none");
  ASSERT_TRUE(g->dirty_log().start());
  ASSERT_TRUE(g->start());
  EXPECT_EQ(g->state(), run_state::running);
  while (g->passes() < 3)
    std::this_thread::sleep_for(1ms);
  auto pause = g->pause();
  EXPECT_EQ(g->state(), run_state::paused);
  dirty_bitmap dirty{g->memory().pages()};
  ASSERT_TRUE(g->dirty_log().sync(dirty));
  // Exactly the working set, nothing else.
  const uint64_t first = params().ws_start / 4096;
  EXPECT_EQ(dirty.count(), params().ws_pages);
  for (uint64_t p = first; p < first + params().ws_pages; ++p)
    ASSERT_TRUE(dirty.test(p)) << p;
  const auto report = testguest::verify(g->memory().bytes());
  EXPECT_TRUE(report.consistent) << report.summary();
  EXPECT_GE(report.counter_min, 3U);
}

TEST(synthetic_guest, a_paused_guest_writes_nothing) {
  auto g = make(0);
  ASSERT_TRUE(g->start());
  while (g->passes() < 1)
    std::this_thread::sleep_for(1ms);
  auto pause = g->pause();
  ASSERT_TRUE(g->dirty_log().start());
  const std::vector<uint8_t> before(g->memory().bytes().begin(), g->memory().bytes().end());
  std::this_thread::sleep_for(50ms);
  EXPECT_TRUE(std::equal(before.begin(), before.end(), g->memory().bytes().begin()));
  dirty_bitmap dirty{g->memory().pages()};
  ASSERT_TRUE(g->dirty_log().sync(dirty));
  EXPECT_TRUE(dirty.empty());
}

// A halted guest (its agent quitting) stays stopped when the pauses held on
// it end: a migrated source's stale copy never writes again.
TEST(synthetic_guest, a_halted_guest_never_runs_again_when_its_pauses_end) {
  auto g = make(0);
  ASSERT_TRUE(g->start());
  while (g->passes() < 1)
    std::this_thread::sleep_for(1ms);
  {
    auto held = g->pause(); // as a completed migration holds its source
    g->halt();
    g->halt(); // once is for good; again changes nothing
  }
  EXPECT_EQ(g->state(), run_state::paused);
  const uint64_t passes = g->passes();
  const std::vector<uint8_t> before(g->memory().bytes().begin(), g->memory().bytes().end());
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(g->passes(), passes);
  EXPECT_TRUE(std::equal(before.begin(), before.end(), g->memory().bytes().begin()));
  { auto again = g->pause(); }
  EXPECT_EQ(g->state(), run_state::paused);
}

TEST(synthetic_guest, rate_limits_the_dirtier) {
  auto g = make(2000); // pages per second
  ASSERT_TRUE(g->start());
  const auto t0 = std::chrono::steady_clock::now();
  std::this_thread::sleep_for(300ms);
  auto pause = g->pause();
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const uint64_t bumped = g->passes() * params().ws_pages;
  // Never faster than the configured rate (plus one batch of slack).
  EXPECT_LE(static_cast<double>(bumped), 2000 * secs + 64);
}

TEST(synthetic_guest, state_blob_roundtrip_and_validation) {
  auto g = make(0);
  ASSERT_TRUE(g->start());
  EXPECT_FALSE(g->save_cpu_state()) << "running guests cannot be saved";
  while (g->passes() < 2)
    std::this_thread::sleep_for(1ms);
  auto pause = g->pause();
  auto blob = g->save_cpu_state();
  ASSERT_TRUE(blob) << describe(blob.error());
  auto other = make(0);
  ASSERT_TRUE(other->load_cpu_state(*blob));
  EXPECT_EQ(other->passes(), g->passes());
  auto bad = *blob;
  bad[0] ^= 1;
  EXPECT_FALSE(other->load_cpu_state(bad));
  bad = *blob;
  bad.pop_back();
  EXPECT_FALSE(other->load_cpu_state(bad));
}

TEST(synthetic_guest, working_set_must_fit) {
  synthetic_guest_config cfg;
  cfg.memory = {memory_backend::kind::ram, 1u << 20, {}, false};
  cfg.ws_start = 0;
  cfg.ws_pages = 1000;
  auto g = synthetic_guest::create(cfg);
  ASSERT_FALSE(g);
  EXPECT_EQ(g.error(), errc::invalid_argument);
}

// With a test-guest image the dirtier keeps the image's pass counter in guest
// memory and reports on the serial port like its KVM twin; its boot step runs
// once, and not at all on a guest that resumes from loaded CPU state.
TEST(synthetic_guest, counts_reports_and_boots_once_like_the_test_guest) {
  const std::string serial_path = ::testing::TempDir() + "synthetic_serial.txt";
  auto make_reporting = [&](int& boots) {
    synthetic_guest_config cfg;
    cfg.memory = {memory_backend::kind::ram, 8u << 20, {}, false};
    cfg.ws_start = params().ws_start;
    cfg.ws_pages = 16;
    cfg.pass_counter_address = testguest::status_address;
    cfg.report_every = 2;
    cfg.serial = std::fopen(serial_path.c_str(), "w");
    cfg.boot = [&boots](guest_memory&, software_dirty_log&, serial_port& s) {
      ++boots;
      for (char c : std::string{"ready\n"})
        s.write(serial_port::base, static_cast<uint8_t>(c));
    };
    auto g = synthetic_guest::create(std::move(cfg));
    EXPECT_TRUE(g) << describe(g.error());
    return std::move(*g);
  };
  int boots = 0;
  auto g = make_reporting(boots);
  ASSERT_TRUE(g->start());
  while (g->passes() < 6)
    std::this_thread::sleep_for(1ms);
  auto pause = g->pause();
  uint32_t counter = 0;
  std::memcpy(&counter, g->memory().data() + testguest::status_address, 4);
  EXPECT_EQ(counter, g->passes());
  EXPECT_EQ(boots, 1);
  std::string text;
  {
    std::FILE* f = std::fopen(serial_path.c_str(), "r");
    ASSERT_NE(f, nullptr);
    char buf[4096];
    text.assign(buf, std::fread(buf, 1, sizeof buf, f));
    std::fclose(f);
  }
  EXPECT_EQ(text.rfind("ready\npass 00000002\npass 00000004\npass 00000006\n", 0), 0U) << text;

  int other_boots = 0;
  auto blob = g->save_cpu_state();
  ASSERT_TRUE(blob);
  auto other = make_reporting(other_boots);
  ASSERT_TRUE(other->load_cpu_state(*blob));
  ASSERT_TRUE(other->start());
  while (other->passes() < g->passes() + 2)
    std::this_thread::sleep_for(1ms);
  EXPECT_EQ(other_boots, 0) << "an incoming guest resumes; it does not boot again";
}
