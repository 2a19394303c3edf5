// The switchover digest: the same pages give the same digest in any order
// and on any number of threads; a page sent again replaces its old
// contribution; one flipped bit, a page at another index or a missing page
// changes it. The digest record round-trips and refuses a wrong length.

#include "protocol/migration_stream.hpp"
#include "protocol/page_digest.hpp"
#include "protocol/page_hash_variants.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <numeric>
#include <random>
#include <thread>
#include <vector>

using namespace ferry;

namespace {

constexpr uint64_t pages = 256;

std::vector<std::array<uint8_t, 4096>> random_pages() {
  std::vector<std::array<uint8_t, 4096>> out(pages);
  std::mt19937_64 rng{42};
  for (auto& p : out)
    for (auto& b : p)
      b = static_cast<uint8_t>(rng());
  return out;
}

TEST(page_digest, is_independent_of_order_and_threads) {
  const auto content = random_pages();
  mig::memory_digest in_order{pages};
  for (uint64_t i = 0; i < pages; ++i)
    in_order.set(i, mig::page_hash(content[i].data()));
  std::vector<uint64_t> order(pages);
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), std::mt19937_64{7});
  mig::memory_digest shuffled{pages};
  std::vector<std::thread> threads;
  threads.reserve(4);
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (size_t k = static_cast<size_t>(t); k < order.size(); k += 4)
        shuffled.set(order[k], mig::page_hash(content[order[k]].data()));
    });
  for (auto& t : threads)
    t.join();
  EXPECT_EQ(in_order.value(), shuffled.value());
}

TEST(page_digest, a_page_sent_again_replaces_its_old_contribution) {
  auto content = random_pages();
  mig::memory_digest a{pages};
  mig::memory_digest b{pages};
  for (uint64_t i = 0; i < pages; ++i) {
    a.set(i, mig::page_hash(content[i].data()));
    b.set(i, mig::zero_page_hash()); // first sent as zero ...
  }
  for (uint64_t i = 0; i < pages; ++i)
    b.set(i, mig::page_hash(content[i].data())); // ... then with data
  EXPECT_EQ(a.value(), b.value());
}

TEST(page_digest, a_forgotten_page_counts_as_never_set_whatever_it_held) {
  auto content = random_pages();
  mig::memory_digest a{pages};
  mig::memory_digest b{pages};
  for (uint64_t i = 0; i < pages; ++i) {
    a.set(i, mig::page_hash(content[i].data()));
    b.set(i, mig::page_hash(content[i].data()));
  }
  // Postcopy: the pages still to come leave both sides' digests, whatever
  // torn copy each side saw of them.
  b.set(3, mig::zero_page_hash());
  a.forget(3);
  b.forget(3);
  a.forget(5);
  EXPECT_NE(a.value(), b.value()) << "page 5 still counts on one side only";
  b.forget(5);
  EXPECT_EQ(a.value(), b.value());
  a.forget(5); // twice: nothing more to take away
  EXPECT_EQ(a.value(), b.value());
}

TEST(page_digest, a_flipped_bit_a_moved_page_or_a_missing_page_changes_it) {
  auto content = random_pages();
  mig::memory_digest good{pages};
  for (uint64_t i = 0; i < pages; ++i)
    good.set(i, mig::page_hash(content[i].data()));
  mig::memory_digest flipped{pages};
  mig::memory_digest swapped{pages};
  mig::memory_digest missing{pages};
  for (uint64_t i = 0; i < pages; ++i) {
    auto page = content[i];
    if (i == 17)
      page[4095] ^= 1;
    flipped.set(i, mig::page_hash(page.data()));
    const uint64_t from = i == 3 ? 4 : i == 4 ? 3 : i; // two pages' contents exchanged
    swapped.set(i, mig::page_hash(content[from].data()));
    if (i != 99)
      missing.set(i, mig::page_hash(content[i].data()));
  }
  EXPECT_NE(good.value(), flipped.value());
  EXPECT_NE(good.value(), swapped.value());
  EXPECT_NE(good.value(), missing.value());
  std::array<uint8_t, 4096> zeros{};
  EXPECT_EQ(mig::page_hash(zeros.data()), mig::zero_page_hash());
}

// The hash is part of the stream's contract (version 5): agents of one
// version on different CPUs must agree, so every build gives XXH3-64 of the
// page, pinned here by value.
TEST(page_digest, every_build_of_the_page_hash_gives_the_same_pinned_value) {
  std::array<uint8_t, 4096> counting{};
  for (size_t i = 0; i < counting.size(); ++i)
    counting[i] = static_cast<uint8_t>(i * 7 + 3);
  const std::array<uint8_t, 4096> zeros{};
  EXPECT_EQ(mig::page_hash(zeros.data()), 0x93d76fe148c689baULL);
  EXPECT_EQ(mig::page_hash(counting.data()), 0xd7428746842be37eULL);
  EXPECT_EQ(mig::detail::page_hash_baseline(counting.data()), 0xd7428746842be37eULL);
#if defined(__x86_64__)
  if (!__builtin_cpu_supports("avx2"))
    GTEST_SKIP() << "this CPU has no AVX2: the AVX2 build of the page hash cannot run here";
  const auto content = random_pages();
  for (const auto& page : content)
    ASSERT_EQ(mig::detail::page_hash_avx2(page.data()),
              mig::detail::page_hash_baseline(page.data()));
  EXPECT_EQ(mig::detail::page_hash_avx2(counting.data()), 0xd7428746842be37eULL);
#endif
}

TEST(page_digest, the_digest_record_round_trips_and_refuses_a_wrong_length) {
  const auto bytes = mig::encode_digest(0x0123456789abcdefULL);
  ASSERT_EQ(bytes.size(), 8U);
  EXPECT_EQ(*mig::decode_digest(bytes), 0x0123456789abcdefULL);
  EXPECT_FALSE(mig::decode_digest(std::span<const uint8_t>{bytes.data(), 7}));
  const auto h = mig::encode_header(mig::record_type::digest, 8, 0);
  auto decoded = mig::decode_header(h);
  ASSERT_TRUE(decoded);
  EXPECT_EQ(decoded->type, mig::record_type::digest);
  EXPECT_STREQ(mig::to_string(mig::record_type::digest), "digest");
}

} // namespace
