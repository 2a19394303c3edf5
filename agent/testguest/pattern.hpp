#pragma once
// The test pattern and counter layout shared by the test guest (counter_guest.S
// implements the same formula), the host-side pattern writer, the -accel none
// dirtier and the verifier.
//
// For guest page p inside [pattern_start, ram_top):
//   dword 0       the page's counter (0 unless the page is in the working set)
//   dword i >= 1  p % 4 == 3 ? 0 : p * 0x9e3779b1 + seed + i * 0x01000193
// so about three quarters of the pattern pages are non-zero, and a lost page
// of either kind shows up (a non-zero page as zeros, a working-set page as a
// counter out of step).

#include "agent/testguest/guest_image.hpp"

#include <cstdint>
#include <span>

namespace ferry::testguest {

inline constexpr uint64_t page_bytes = 4096;
inline constexpr uint32_t dwords_per_page = page_bytes / 4;
inline constexpr uint32_t page_multiplier = 0x9e3779b1;
inline constexpr uint32_t word_step = 0x01000193;

inline constexpr bool is_zero_class(uint64_t page) {
  return page % 4 == 3;
}

inline constexpr uint32_t pattern_word(uint64_t page, uint32_t i, uint32_t seed) {
  if (is_zero_class(page))
    return 0;
  return static_cast<uint32_t>(page) * page_multiplier + seed + i * word_step;
}

// Writes the pattern for guest page `page` (counter 0) into `dst` (4096 bytes).
void fill_page(uint8_t* dst, uint64_t page, uint32_t seed);

// Fills [p.pattern_start, min(p.ram_top, mem.size())) of `mem` with the pattern.
void fill_pattern(std::span<uint8_t> mem, const guest_params& p);

// True when dwords 1..1023 of `src` match the pattern of `page`.
bool page_matches(const uint8_t* src, uint64_t page, uint32_t seed);

} // namespace ferry::testguest
