// The COLO secondary's staging area: a checkpoint reaches guest memory only
// whole (pages and CPU state) and all at once; a checkpoint dropped midway
// leaves memory exactly as the previous commit left it; hostile page
// indexes and sizes are refused, and the area never holds more than RAM.
#include "agent/migration/checkpoint_staging.hpp"

#include <gtest/gtest.h>

#include <vector>

using namespace ferry;

namespace {

constexpr uint64_t pages = 16;

std::vector<uint8_t> page_of(uint8_t fill) {
  return std::vector<uint8_t>(4096, fill);
}

uint8_t first_byte(const std::vector<uint8_t>& ram, uint64_t pfn) {
  return ram[pfn * 4096];
}

} // namespace

TEST(checkpoint_staging, a_whole_checkpoint_lands_at_commit_and_not_before) {
  std::vector<uint8_t> ram(pages * 4096, 0x11);
  checkpoint_staging s{pages};
  s.begin(1);
  ASSERT_TRUE(s.stage_page(3, page_of(0xaa)));
  ASSERT_TRUE(s.stage_page(5, {}));            // a zero page
  ASSERT_TRUE(s.stage_page(3, page_of(0xbb))); // staged twice: the last wins
  EXPECT_EQ(first_byte(ram, 3), 0x11) << "nothing reaches RAM before the commit";
  s.stage_cpu_state({1, 2, 3});
  EXPECT_EQ(s.staged_pages(), 2U);
  size_t seen = 0;
  s.for_each_page([&](uint64_t pfn, std::span<const uint8_t> data) {
    ++seen;
    if (pfn == 3) {
      ASSERT_EQ(data.size(), 4096U);
      EXPECT_EQ(data[0], 0xbb) << "the page as it will be committed";
    } else {
      EXPECT_EQ(pfn, 5U);
      EXPECT_TRUE(data.empty()) << "a zero page";
    }
  });
  EXPECT_EQ(seen, 2U);
  auto cpu = s.commit(ram);
  ASSERT_TRUE(cpu);
  EXPECT_EQ(*cpu, (std::vector<uint8_t>{1, 2, 3}));
  EXPECT_EQ(first_byte(ram, 3), 0xbb);
  EXPECT_EQ(ram[3 * 4096 + 4095], 0xbb);
  EXPECT_EQ(first_byte(ram, 5), 0x00);
  EXPECT_EQ(first_byte(ram, 4), 0x11) << "unstaged pages untouched";
  EXPECT_EQ(s.staged_pages(), 0U) << "empty after the commit";
}

TEST(checkpoint_staging, a_checkpoint_cut_off_leaves_the_previous_one) {
  std::vector<uint8_t> ram(pages * 4096, 0x11);
  checkpoint_staging s{pages};
  s.begin(1);
  ASSERT_TRUE(s.stage_page(2, page_of(0x22)));
  s.stage_cpu_state({1});
  ASSERT_TRUE(s.commit(ram));
  const auto after_first = ram;
  // Checkpoint 2 arrives in part: pages but no CPU state, then the link
  // breaks. A commit refuses it; the next begin drops it.
  s.begin(2);
  ASSERT_TRUE(s.stage_page(2, page_of(0x33)));
  ASSERT_TRUE(s.stage_page(7, page_of(0x44)));
  auto refused = s.commit(ram);
  ASSERT_FALSE(refused);
  EXPECT_EQ(ram, after_first) << "a checkpoint without its CPU state touches nothing";
  s.begin(3);
  EXPECT_EQ(s.staged_pages(), 0U);
  EXPECT_FALSE(s.has_cpu_state());
  s.stage_cpu_state({9});
  ASSERT_TRUE(s.commit(ram));
  EXPECT_EQ(ram, after_first) << "checkpoint 2's pages were dropped, not kept for 3";
}

TEST(checkpoint_staging, hostile_pages_are_refused_and_the_area_stays_within_ram) {
  checkpoint_staging s{pages};
  s.begin(1);
  EXPECT_FALSE(s.stage_page(pages, page_of(1))) << "one past the end of RAM";
  EXPECT_FALSE(s.stage_page(UINT64_MAX, page_of(1)));
  const std::vector<uint8_t> short_page(4095, 1);
  EXPECT_FALSE(s.stage_page(1, short_page));
  EXPECT_EQ(s.staged_pages(), 0U);
  // A peer turning one page zero and back again, many times, reuses its slot.
  for (int i = 0; i < 1000; ++i) {
    ASSERT_TRUE(s.stage_page(4, page_of(static_cast<uint8_t>(i))));
    ASSERT_TRUE(s.stage_page(4, {}));
  }
  ASSERT_TRUE(s.stage_page(4, page_of(0x5a)));
  EXPECT_EQ(s.staged_pages(), 1U);
  EXPECT_EQ(s.staged_bytes(), 4096U);
  std::vector<uint8_t> ram(pages * 4096, 0);
  s.stage_cpu_state({});
  ASSERT_TRUE(s.commit(ram));
  EXPECT_EQ(first_byte(ram, 4), 0x5a);
  std::vector<uint8_t> small(4096);
  s.begin(2);
  s.stage_cpu_state({});
  EXPECT_FALSE(s.commit(small)) << "RAM smaller than the area's";
}
