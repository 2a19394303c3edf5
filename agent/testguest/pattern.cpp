#include "agent/testguest/pattern.hpp"

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

} // namespace ferry::testguest
