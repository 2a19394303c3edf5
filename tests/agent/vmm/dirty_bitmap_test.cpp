#include "agent/vmm/dirty_bitmap.hpp"

#include <gtest/gtest.h>

#include <random>
#include <set>

using namespace ferry;

TEST(dirty_bitmap, set_test_count_and_iterate_against_a_set_oracle) {
  std::mt19937_64 rng{42};
  for (int round = 0; round < 50; ++round) {
    const uint64_t pages = 1 + rng() % 5000;
    dirty_bitmap bm{pages};
    std::set<uint64_t> oracle;
    for (int i = 0; i < 300; ++i) {
      const uint64_t p = rng() % pages;
      bm.set(p);
      oracle.insert(p);
    }
    EXPECT_EQ(bm.count(), oracle.size());
    EXPECT_EQ(bm.set_pages(), std::vector<uint64_t>(oracle.begin(), oracle.end()));
    for (uint64_t p = 0; p < pages; ++p)
      ASSERT_EQ(bm.test(p), oracle.count(p) == 1);
  }
}

TEST(dirty_bitmap, or_words_at_aligned_and_unaligned_offsets) {
  std::mt19937_64 rng{7};
  for (uint64_t first : {0ULL, 64ULL, 3ULL, 61ULL, 200ULL}) {
    dirty_bitmap bm{1000};
    std::vector<uint64_t> words(4);
    for (auto& w : words)
      w = rng();
    const uint64_t n = 250;
    bm.or_words(first, words.data(), n);
    for (uint64_t i = 0; i < n; ++i)
      ASSERT_EQ(bm.test(first + i), ((words[i / 64] >> (i % 64)) & 1) == 1)
        << "first " << first << " bit " << i;
    // Bits past `n` in the source words are not copied.
    for (uint64_t p = first + n; p < 1000; ++p)
      ASSERT_FALSE(bm.test(p));
  }
}

TEST(dirty_bitmap, merge_and_clear) {
  dirty_bitmap a{130}, b{130};
  a.set(1);
  b.set(129);
  a.merge(b);
  EXPECT_EQ(a.set_pages(), (std::vector<uint64_t>{1, 129}));
  a.clear();
  EXPECT_TRUE(a.empty());
}
