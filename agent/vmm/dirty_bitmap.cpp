#include "agent/vmm/dirty_bitmap.hpp"

#include <algorithm>
#include <bit>

namespace ferry {

dirty_bitmap::dirty_bitmap(uint64_t pages) : pages_(pages), words_((pages + 63) / 64, 0) {}

void dirty_bitmap::or_words(uint64_t first, const uint64_t* words, uint64_t pages) {
  if (first % 64 == 0) {
    const uint64_t full = pages / 64;
    for (uint64_t i = 0; i < full; ++i)
      words_[first / 64 + i] |= words[i];
    for (uint64_t i = full * 64; i < pages; ++i)
      if ((words[i / 64] >> (i % 64)) & 1U)
        set(first + i);
    return;
  }
  for (uint64_t i = 0; i < pages; ++i)
    if ((words[i / 64] >> (i % 64)) & 1U)
      set(first + i);
}

void dirty_bitmap::merge(const dirty_bitmap& other) {
  const auto n = std::min(words_.size(), other.words_.size());
  for (size_t i = 0; i < n; ++i)
    words_[i] |= other.words_[i];
}

void dirty_bitmap::clear() {
  std::fill(words_.begin(), words_.end(), 0);
}

void dirty_bitmap::set_all() {
  std::fill(words_.begin(), words_.end(), ~uint64_t{0});
  if (pages_ % 64 != 0)
    words_.back() = (uint64_t{1} << (pages_ % 64)) - 1;
}

uint64_t dirty_bitmap::count() const {
  uint64_t n = 0;
  for (auto w : words_)
    n += static_cast<uint64_t>(std::popcount(w));
  return n;
}

std::vector<uint64_t> dirty_bitmap::set_pages() const {
  std::vector<uint64_t> out;
  for_each([&](uint64_t p) { out.push_back(p); });
  return out;
}

} // namespace ferry
