#include "protocol/page_digest.hpp"

#include <cstring>

namespace ferry::mig {

namespace {

constexpr uint64_t k1 = 0x9e3779b185ebca87ULL;
constexpr uint64_t k2 = 0xc2b2ae3d27d4eb4fULL;
constexpr uint64_t k3 = 0x165667b19e3779f9ULL;

constexpr uint64_t rotl(uint64_t x, int r) {
  return (x << r) | (x >> (64 - r));
}

// Finalizer: every input bit reaches every output bit.
constexpr uint64_t avalanche(uint64_t x) {
  x ^= x >> 33;
  x *= k2;
  x ^= x >> 29;
  x *= k3;
  x ^= x >> 32;
  return x;
}

} // namespace

uint64_t page_hash(const uint8_t* page) {
  // Four independent lanes over 32-byte stripes keep the multipliers busy.
  uint64_t lane[4] = {k1 + k2, k2, 0, 0 - k1};
  for (size_t at = 0; at < 4096; at += 32)
    for (int j = 0; j < 4; ++j) {
      uint64_t w = 0;
      std::memcpy(&w, page + at + 8 * static_cast<size_t>(j), 8);
      lane[j] = rotl(lane[j] + w * k2, 31) * k1;
    }
  uint64_t h = rotl(lane[0], 1) + rotl(lane[1], 7) + rotl(lane[2], 12) + rotl(lane[3], 18);
  return avalanche(h + 4096);
}

uint64_t zero_page_hash() {
  static const uint64_t h = [] {
    static const uint8_t zeros[4096] = {};
    return page_hash(zeros);
  }();
  return h;
}

uint64_t page_contribution(uint64_t pfn, uint64_t h) {
  return avalanche(h ^ (pfn * k3 + k1));
}

} // namespace ferry::mig
