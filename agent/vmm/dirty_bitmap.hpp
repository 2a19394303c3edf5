#pragma once
// A plain (single-threaded) bitmap with one bit per guest page.

#include <cstddef>
#include <cstdint>
#include <vector>

namespace ferry {

class dirty_bitmap {
public:
  explicit dirty_bitmap(uint64_t pages = 0);

  uint64_t pages() const { return pages_; }
  void set(uint64_t page) { words_[page / 64] |= uint64_t{1} << (page % 64); }
  void clear_page(uint64_t page) { words_[page / 64] &= ~(uint64_t{1} << (page % 64)); }
  bool test(uint64_t page) const { return (words_[page / 64] >> (page % 64)) & 1U; }
  // Sets `pages` bits from `words` (bit i of the range = page first + i).
  void or_words(uint64_t first, const uint64_t* words, uint64_t pages);
  void merge(const dirty_bitmap& other);
  void clear();
  void set_all();
  // Raw access for walkers that take 64 pages at a time.
  size_t word_count() const { return words_.size(); }
  uint64_t word(size_t i) const { return words_[i]; }
  uint64_t count() const;
  bool empty() const { return count() == 0; }
  std::vector<uint64_t> set_pages() const;

  template <class F>
  void for_each(F&& fn) const {
    for (uint64_t w = 0; w < words_.size(); ++w) {
      uint64_t bits = words_[w];
      while (bits != 0) {
        const auto bit = static_cast<uint64_t>(__builtin_ctzll(bits));
        fn(w * 64 + bit);
        bits &= bits - 1;
      }
    }
  }

  friend bool operator==(const dirty_bitmap&, const dirty_bitmap&) = default;

private:
  uint64_t pages_;
  std::vector<uint64_t> words_;
};

} // namespace ferry
