#include "agent/testguest/pattern.hpp"

#include <algorithm>
#include <cstring>

namespace ferry::testguest {

void fill_page(uint8_t* dst, uint64_t page, uint32_t seed) {
  uint32_t words[dwords_per_page];
  words[0] = 0;
  for (uint32_t i = 1; i < dwords_per_page; ++i)
    words[i] = pattern_word(page, i, seed);
  std::memcpy(dst, words, page_bytes);
}

bool page_matches(const uint8_t* src, uint64_t page, uint32_t seed) {
  uint32_t words[dwords_per_page];
  std::memcpy(words, src, page_bytes);
  for (uint32_t i = 1; i < dwords_per_page; ++i)
    if (words[i] != pattern_word(page, i, seed))
      return false;
  return true;
}

void fill_pattern(std::span<uint8_t> mem, const guest_params& p) {
  const uint64_t end = std::min<uint64_t>(p.ram_top, mem.size());
  for (uint64_t addr = p.pattern_start; addr + page_bytes <= end; addr += page_bytes)
    fill_page(mem.data() + addr, addr / page_bytes, p.seed);
}

} // namespace ferry::testguest
