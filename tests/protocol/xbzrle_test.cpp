#include "protocol/migration_stream.hpp"
#include "protocol/xbzrle.hpp"

#include <gtest/gtest.h>

#include <random>
#include <vector>

using namespace ferry;
namespace xb = ferry::mig::xbzrle;

namespace {

constexpr size_t page = mig::page_size;
using bytes = std::vector<uint8_t>;

// decode(encode(old, cur), old) == cur, or the encoder said "overflow".
// Returns the delta length (-1 for overflow).
long round_trip(const bytes& old, const bytes& cur, size_t limit = page) {
  bytes delta(limit);
  const long n = xb::encode(old, cur, delta);
  if (n < 0)
    return n;
  delta.resize(static_cast<size_t>(n));
  EXPECT_TRUE(xb::check(delta, cur.size())) << "encoder wrote a delta check() refuses";
  bytes out = old;
  xb::apply(delta, out);
  EXPECT_EQ(out, cur);
  return n;
}

bytes random_page(std::mt19937_64& rng) {
  bytes p(page);
  for (auto& b : p)
    b = static_cast<uint8_t>(rng());
  return p;
}

// Changes `edits` runs of random length and content, some one byte apart,
// some touching the page's ends.
bytes mutate(const bytes& p, std::mt19937_64& rng, int edits) {
  bytes q = p;
  for (int e = 0; e < edits; ++e) {
    const size_t at = rng() % page;
    const size_t len = 1 + rng() % (rng() % 4 == 0 ? 300 : 9);
    for (size_t i = at; i < std::min(page, at + len); ++i)
      q[i] = static_cast<uint8_t>(rng());
  }
  return q;
}

std::string error_of(const caf::expected<void>& r) {
  return r ? std::string{"<ok>"} : to_string(r.error());
}

} // namespace

TEST(xbzrle, identical_pages_encode_to_nothing) {
  std::mt19937_64 rng{1};
  const auto p = random_page(rng);
  EXPECT_EQ(round_trip(p, p), 0);
  EXPECT_EQ(round_trip(bytes(page, 0), bytes(page, 0)), 0);
}

TEST(xbzrle, a_changed_counter_costs_a_few_bytes) {
  bytes old(page, 0x5a);
  bytes cur = old;
  cur[1000] = 1;
  cur[1001] = 2;
  EXPECT_EQ(round_trip(old, cur), 2 + 1 + 2); // uleb(1000)=2 bytes, uleb(2), data
  cur[0] = 7;
  cur[page - 1] = 9;
  EXPECT_GT(round_trip(old, cur), 0);
}

TEST(xbzrle, property_decode_of_encode_gives_the_new_page) {
  std::mt19937_64 rng{20261123};
  int encoded = 0;
  int overflowed = 0;
  for (int iter = 0; iter < 4000; ++iter) {
    const auto old = iter % 5 == 0 ? bytes(page, static_cast<uint8_t>(iter)) : random_page(rng);
    const auto cur = mutate(old, rng, 1 + static_cast<int>(rng() % (iter % 7 == 0 ? 2000 : 12)));
    // Sometimes a tight output buffer, as for a page that must shrink a lot.
    const size_t limit = iter % 3 == 0 ? 16 + rng() % 256 : page;
    const long n = round_trip(old, cur, limit);
    ASSERT_LE(n, static_cast<long>(limit));
    (n < 0 ? overflowed : encoded)++;
    if (HasFailure())
      FAIL() << "iteration " << iter;
  }
  // Both outcomes were exercised.
  EXPECT_GT(encoded, 1000);
  EXPECT_GT(overflowed, 10);
}

TEST(xbzrle, unrelated_pages_overflow_and_tight_limits_are_respected) {
  std::mt19937_64 rng{7};
  EXPECT_EQ(round_trip(random_page(rng), random_page(rng)), -1);
  bytes old(page, 0);
  bytes cur = old;
  for (size_t i = 0; i < 64; ++i)
    cur[i * 64] = 1; // 64 runs of 1 byte: 64 * (2 + 1) bytes and a bit
  EXPECT_EQ(round_trip(old, cur, 100), -1);
  EXPECT_GT(round_trip(old, cur, page), 0);
}

TEST(xbzrle, malformed_deltas_are_refused_with_a_reason) {
  EXPECT_EQ(error_of(xb::check(bytes{}, page)), "<ok>");
  EXPECT_NE(error_of(xb::check(bytes{0x05}, page)).find("truncated or over-long"),
            std::string::npos);
  EXPECT_NE(error_of(xb::check(bytes{0x00, 0x00}, page)).find("empty changed run"),
            std::string::npos);
  // 4095 unchanged + 2 changed runs past the page.
  EXPECT_NE(error_of(xb::check(bytes{0xff, 0x1f, 0x02, 1, 2}, page)).find("past the end"),
            std::string::npos);
  EXPECT_NE(error_of(xb::check(bytes{0x00, 0x04, 1, 2}, page)).find("truncated"),
            std::string::npos);
  EXPECT_NE(error_of(xb::check(bytes{0x80, 0x80, 0x80, 0x01, 0x01, 1}, page)).find("over-long"),
            std::string::npos);
  EXPECT_EQ(error_of(xb::check(bytes{0xff, 0x1f, 0x01, 9}, page)), "<ok>"); // last byte
}

TEST(xbzrle, stream_batches_are_checked_before_they_are_applied) {
  bytes ram(4 * page, 0);
  std::vector<std::atomic<uint64_t>> nonzero(1);
  bytes old(page, 0);
  bytes cur = old;
  cur[10] = 42;
  bytes delta(page);
  delta.resize(static_cast<size_t>(xb::encode(old, cur, delta)));

  bytes rec;
  mig::begin_xbzrle(rec);
  mig::append_xbzrle(rec, 2, delta);
  mig::finish_xbzrle(rec, 1);
  auto b = mig::decode_xbzrle(rec, 4);
  ASSERT_TRUE(b) << to_string(b.error());
  EXPECT_EQ(mig::apply_xbzrle(*b, ram, nonzero), delta.size());
  EXPECT_EQ(ram[2 * page + 10], 42);
  EXPECT_EQ(nonzero[0].load(), 1u << 2);

  auto refused = [&](const bytes& r) {
    auto d = mig::decode_xbzrle(r, 4);
    return d ? std::string{"<ok>"} : to_string(d.error());
  };
  EXPECT_NE(refused(bytes(4, 0)).find("too short"), std::string::npos);
  bytes beyond;
  mig::begin_xbzrle(beyond);
  mig::append_xbzrle(beyond, 4, delta);
  mig::finish_xbzrle(beyond, 1);
  EXPECT_NE(refused(beyond).find("beyond guest RAM"), std::string::npos);
  bytes bad_delta;
  mig::begin_xbzrle(bad_delta);
  mig::append_xbzrle(bad_delta, 1, bytes{0x00, 0x00});
  mig::finish_xbzrle(bad_delta, 1);
  EXPECT_NE(refused(bad_delta).find("empty changed run"), std::string::npos);
  bytes trailing = rec;
  trailing.push_back(0);
  EXPECT_NE(refused(trailing).find("trailing"), std::string::npos);
  bytes miscounted = rec;
  mig::finish_xbzrle(miscounted, 2);
  EXPECT_NE(refused(miscounted).find("truncated"), std::string::npos);
  bytes empty_delta;
  mig::begin_xbzrle(empty_delta);
  mig::append_xbzrle(empty_delta, 1, bytes{});
  mig::finish_xbzrle(empty_delta, 1);
  EXPECT_NE(refused(empty_delta).find("bad length"), std::string::npos);
}
