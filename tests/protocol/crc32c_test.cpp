// CRC-32C against a bit-at-a-time reference written from the polynomial
// alone: every length around the block sizes the fast path splits at, every
// alignment, and continuation across arbitrary cuts.

#include "protocol/crc32c.hpp"

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

using namespace ferry;

namespace {

uint32_t reference(uint32_t crc, const uint8_t* p, size_t n) {
  crc = ~crc;
  for (size_t i = 0; i < n; ++i) {
    crc ^= p[i];
    for (int k = 0; k < 8; ++k)
      crc = (crc >> 1) ^ (0x82f63b78u & (0u - (crc & 1u)));
  }
  return ~crc;
}

std::vector<uint8_t> random_bytes(size_t n) {
  std::vector<uint8_t> v(n);
  std::mt19937_64 rng{7};
  for (auto& b : v)
    b = static_cast<uint8_t>(rng());
  return v;
}

} // namespace

TEST(crc32c, matches_the_standard_check_value) {
  const std::string s = "123456789";
  EXPECT_EQ(crc32c(0, {reinterpret_cast<const uint8_t*>(s.data()), s.size()}), 0xe3069283u);
  // Continuation over pieces equals one pass.
  const auto* p = reinterpret_cast<const uint8_t*>(s.data());
  EXPECT_EQ(crc32c(crc32c(0, {p, 4}), {p + 4, 5}), 0xe3069283u);
}

TEST(crc32c, matches_the_reference_at_every_length_and_alignment_near_the_block_sizes) {
  const auto data = random_bytes(64 * 1024 + 16);
  std::vector<size_t> lengths;
  for (size_t n = 0; n < 64; ++n)
    lengths.push_back(n);
  // Around three of each block (1360 and 4096 bytes), a page, and spans
  // that take several long steps and then a page step.
  for (size_t centre : {3 * 1360, 4096, 3 * 4096, 3 * 4096 + 3 * 1360, 6 * 4096, 65536})
    for (size_t n = centre - 9; n <= centre + 9; ++n)
      lengths.push_back(n);
  for (size_t n : lengths)
    for (size_t offset = 0; offset < 8; ++offset) {
      ASSERT_LE(offset + n, data.size());
      const uint8_t* p = data.data() + offset;
      ASSERT_EQ(crc32c(0, {p, n}), reference(0, p, n)) << "length " << n << " offset " << offset;
      ASSERT_EQ(crc32c(0x12345678, {p, n}), reference(0x12345678, p, n)) << "length " << n;
    }
}

TEST(crc32c, continues_across_any_cut) {
  const auto data = random_bytes(40000);
  const uint32_t whole = reference(0, data.data(), data.size());
  std::mt19937_64 rng{11};
  for (int round = 0; round < 200; ++round) {
    uint32_t crc = 0;
    size_t at = 0;
    while (at < data.size()) {
      const size_t n = std::min<size_t>(data.size() - at, rng() % 20000);
      crc = crc32c(crc, {data.data() + at, n});
      at += n;
    }
    ASSERT_EQ(crc, whole) << "round " << round;
  }
}
