#include "agent/testguest/pattern.hpp"
#include "tools/testguest/pattern_file.hpp"
#include "tools/testguest/verifier.hpp"

#include <gtest/gtest.h>

#include <cstring>

using namespace ferry::testguest;

namespace {

struct verifier_fixture : ::testing::Test {
  void SetUp() override {
    params.ram_top = 4u << 20;
    params.ws_start = 2u << 20;
    params.ws_pages = 100;
    mem.assign(params.ram_top, 0);
    auto img = builtin_image();
    std::vector<uint8_t> sector(img.begin(), img.end());
    ASSERT_TRUE(write_params(sector, params));
    std::memcpy(mem.data() + boot_address, sector.data(), sector.size());
    fill_pattern(mem, params);
  }
  void set_counter(uint64_t ws_index, uint32_t v) {
    std::memcpy(mem.data() + params.ws_start + ws_index * 4096, &v, 4);
  }
  verify_report check() { return verify(mem); }

  guest_params params;
  std::vector<uint8_t> mem;
};

} // namespace

TEST_F(verifier_fixture, fresh_pattern_is_consistent) {
  auto r = check();
  EXPECT_TRUE(r.consistent) << r.summary();
  EXPECT_EQ(r.params, params) << "parameters are read from the dump at 0x7c00";
  EXPECT_EQ(r.pattern_pages, (params.ram_top - params.pattern_start) / 4096);
}

TEST_F(verifier_fixture, one_wave_front_is_consistent) {
  for (uint64_t i = 0; i < params.ws_pages; ++i)
    set_counter(i, i < 37 ? 8 : 7);
  auto r = check();
  EXPECT_TRUE(r.consistent) << r.summary();
  EXPECT_EQ(r.step_downs, 1U);
  EXPECT_EQ(r.counter_min, 7U);
  EXPECT_EQ(r.counter_max, 8U);
}

TEST_F(verifier_fixture, a_stale_working_set_page_is_caught) {
  for (uint64_t i = 0; i < params.ws_pages; ++i)
    set_counter(i, i < 37 ? 8 : 7);
  set_counter(60, 6); // an old copy of one page: a second step down
  auto r = check();
  EXPECT_FALSE(r.consistent) << r.summary();
}

TEST_F(verifier_fixture, a_page_from_the_future_is_caught) {
  for (uint64_t i = 0; i < params.ws_pages; ++i)
    set_counter(i, 5);
  set_counter(50, 7);
  EXPECT_FALSE(check().consistent);
}

TEST_F(verifier_fixture, a_lost_pattern_page_is_caught) {
  // The page at 3 MiB is of the non-zero class; a destination that never
  // received it holds zeros.
  ASSERT_FALSE(is_zero_class((3u << 20) / 4096));
  std::memset(mem.data() + (3u << 20), 0, 4096);
  auto r = check();
  EXPECT_FALSE(r.consistent);
  EXPECT_EQ(r.bad_pages, 1U);
  EXPECT_NE(r.summary().find("0x300000"), std::string::npos) << r.summary();
}

TEST_F(verifier_fixture, a_single_flipped_bit_is_caught) {
  mem[(1u << 20) + 4096 * 5 + 1234] ^= 0x10;
  EXPECT_FALSE(check().consistent);
}

TEST_F(verifier_fixture, a_counter_outside_the_working_set_is_caught) {
  uint32_t one = 1;
  std::memcpy(mem.data() + (3u << 20), &one, 4);
  EXPECT_FALSE(check().consistent);
}

TEST_F(verifier_fixture, a_dump_without_parameters_or_too_short_is_refused) {
  std::vector<uint8_t> small(1000, 0);
  EXPECT_FALSE(verify(small).consistent);
  std::vector<uint8_t> blank(1u << 20, 0);
  auto r = verify(blank);
  EXPECT_FALSE(r.consistent);
  EXPECT_NE(r.summary().find("no test guest parameter block"), std::string::npos);
  mem.resize(3u << 20);
  EXPECT_FALSE(check().consistent) << "shorter than ram-top";
}

TEST(pattern, host_formula_matches_the_documented_one) {
  EXPECT_EQ(pattern_word(0x100, 1, 0x5eed), 0x100U * 0x9e3779b1U + 0x5eed + 0x01000193U);
  EXPECT_EQ(pattern_word(0x103, 5, 1), 0U) << "every fourth page is zero";
  uint8_t page[4096];
  fill_page(page, 0x200, 9);
  EXPECT_TRUE(page_matches(page, 0x200, 9));
  EXPECT_FALSE(page_matches(page, 0x201, 9));
  EXPECT_FALSE(page_matches(page, 0x200, 10));
}

TEST_F(verifier_fixture, each_vcpu_working_set_holds_its_own_wave_front) {
  // Three vCPUs: the sets follow each other from ws_start; each has its own
  // wave (vCPU 1 at 20/19, vCPU 2 at 3/2).
  for (uint64_t i = 0; i < params.ws_pages; ++i) {
    set_counter(i, i < 37 ? 8 : 7);
    set_counter(params.ws_pages + i, i < 90 ? 20 : 19);
    set_counter(uint64_t{2} * params.ws_pages + i, i < 5 ? 3 : 2);
  }
  auto r = verify(mem, std::nullopt, 3);
  EXPECT_TRUE(r.consistent) << r.summary();
  EXPECT_EQ(r.counter_max, 8U) << "the boot processor's figures";
  EXPECT_NE(r.summary().find("3 vCPU working sets"), std::string::npos);
  // Checked as one vCPU, vCPU 1's counters lie outside the working set.
  EXPECT_FALSE(verify(mem).consistent);
  // A stale page in vCPU 2's set is caught there.
  set_counter(uint64_t{2} * params.ws_pages + 50, 1);
  r = verify(mem, std::nullopt, 3);
  EXPECT_FALSE(r.consistent) << r.summary();
  EXPECT_NE(r.summary().find("vCPU 2's working set"), std::string::npos) << r.summary();
}
