#include "protocol/page_digest.hpp"
#include "protocol/page_hash_variants.hpp"

#define XXH_INLINE_ALL
#include <xxhash.h>

namespace ferry::mig {

namespace {

constexpr uint64_t k1 = 0x9e3779b185ebca87ULL;
constexpr uint64_t k2 = 0xc2b2ae3d27d4eb4fULL;
constexpr uint64_t k3 = 0x165667b19e3779f9ULL;

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

namespace detail {
uint64_t page_hash_baseline(const uint8_t* page) {
  return XXH3_64bits(page, hashed_page_bytes);
}
} // namespace detail

uint64_t page_hash(const uint8_t* page) {
#if defined(__x86_64__)
  // Same function, wider vectors: both give XXH3's value, so a source and a
  // destination on different CPUs agree.
  static const auto hash =
    __builtin_cpu_supports("avx2") ? detail::page_hash_avx2 : detail::page_hash_baseline;
  return hash(page);
#else
  return detail::page_hash_baseline(page);
#endif
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
