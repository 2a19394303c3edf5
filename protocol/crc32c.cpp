#include "protocol/crc32c.hpp"

#include <array>
#include <cstring>
#include <vector>

namespace ferry {

namespace {

constexpr uint32_t poly = 0x82f63b78; // reflected Castagnoli polynomial

constexpr std::array<uint32_t, 256> make_table() {
  std::array<uint32_t, 256> t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k)
      c = (c & 1) != 0 ? (c >> 1) ^ poly : c >> 1;
    t[i] = c;
  }
  return t;
}

constexpr auto table = make_table();

uint32_t crc_portable(uint32_t crc, const uint8_t* p, size_t n) {
  for (size_t i = 0; i < n; ++i)
    crc = table[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
  return crc;
}

#if defined(__x86_64__)
// One crc32 instruction has a latency of three cycles but a throughput of
// one per cycle, so a single dependent chain uses a third of the unit. Long
// inputs therefore run as three chains over adjacent blocks, and the chains
// are joined by shifting the earlier ones past the later blocks' bytes.
__attribute__((target("sse4.2"))) uint64_t chain(uint64_t c, const uint8_t* p, size_t n) {
  for (; n >= 8; n -= 8, p += 8) {
    uint64_t w = 0;
    std::memcpy(&w, p, 8);
    c = __builtin_ia32_crc32di(c, w);
  }
  return c;
}

__attribute__((target("sse4.2"))) uint32_t crc_sse42_serial(uint32_t crc, const uint8_t* p,
                                                            size_t n) {
  auto c32 = static_cast<uint32_t>(chain(crc, p, n & ~size_t{7}));
  p += n & ~size_t{7};
  for (n &= 7; n > 0; --n)
    c32 = __builtin_ia32_crc32qi(c32, *p++);
  return c32;
}

// Appending `len` zero bytes to a (non-inverted) CRC state is linear over
// GF(2) in the state, so it is four table lookups, one per state byte.
struct zeros_shift {
  std::array<std::array<uint32_t, 256>, 4> t{};
  explicit zeros_shift(size_t len) {
    const std::vector<uint8_t> zeros(len);
    for (uint32_t byte = 0; byte < 4; ++byte)
      for (uint32_t v = 0; v < 256; ++v)
        t[byte][v] = crc_sse42_serial(v << (8 * byte), zeros.data(), len);
  }
  uint32_t operator()(uint32_t c) const {
    return t[0][c & 0xff] ^ t[1][(c >> 8) & 0xff] ^ t[2][(c >> 16) & 0xff] ^ t[3][c >> 24];
  }
};

// Block sizes: a 12 KiB step for long spans, and one whose three blocks
// nearly fill a 4 KiB page (4080 bytes), the length most records carry.
constexpr size_t long_block = 4096;
constexpr size_t page_block = 1360;

__attribute__((target("sse4.2"))) uint32_t three_chains(uint32_t crc, const uint8_t*& p, size_t& n,
                                                        size_t block,
                                                        const zeros_shift& past_block) {
  while (n >= 3 * block) {
    uint64_t a = crc;
    uint64_t b = 0;
    uint64_t c = 0;
    for (size_t i = 0; i < block; i += 8) {
      uint64_t wa = 0;
      uint64_t wb = 0;
      uint64_t wc = 0;
      std::memcpy(&wa, p + i, 8);
      std::memcpy(&wb, p + block + i, 8);
      std::memcpy(&wc, p + 2 * block + i, 8);
      a = __builtin_ia32_crc32di(a, wa);
      b = __builtin_ia32_crc32di(b, wb);
      c = __builtin_ia32_crc32di(c, wc);
    }
    crc = past_block(past_block(static_cast<uint32_t>(a)) ^ static_cast<uint32_t>(b)) ^
          static_cast<uint32_t>(c);
    p += 3 * block;
    n -= 3 * block;
  }
  return crc;
}

uint32_t crc_sse42(uint32_t crc, const uint8_t* p, size_t n) {
  if (n >= 3 * page_block) {
    static const zeros_shift past_long{long_block};
    static const zeros_shift past_page{page_block};
    crc = three_chains(crc, p, n, long_block, past_long);
    crc = three_chains(crc, p, n, page_block, past_page);
  }
  return crc_sse42_serial(crc, p, n);
}

bool have_sse42() {
  static const bool yes = __builtin_cpu_supports("sse4.2");
  return yes;
}
#endif

} // namespace

uint32_t crc32c(uint32_t crc, std::span<const uint8_t> data) {
  crc = ~crc;
#if defined(__x86_64__)
  if (have_sse42())
    return ~crc_sse42(crc, data.data(), data.size());
#endif
  return ~crc_portable(crc, data.data(), data.size());
}

} // namespace ferry
