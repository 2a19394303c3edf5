#pragma once
// The source's XBZRLE page cache (xbzrle-cache-size): the copy of each
// cached page the destination holds, so a page sent again can go as a delta
// from it. Direct-mapped by page index; a newer page simply replaces the
// one in its slot, since the cache only has to be right, not complete.
// Owned by one sending thread.

#include <cstdint>
#include <memory>

namespace ferry {

class xbzrle_cache {
public:
  // `bytes` is rounded down to whole pages (at least one).
  explicit xbzrle_cache(uint64_t bytes);

  uint64_t size_bytes() const { return slots_ * page_bytes; }
  // The cached copy of page `pfn`, or nullptr.
  uint8_t* find(uint64_t pfn);
  // Caches `page` as page `pfn`'s copy, evicting whatever used its slot.
  void insert(uint64_t pfn, const uint8_t* page);

private:
  static constexpr uint64_t page_bytes = 4096;
  static constexpr uint64_t empty = UINT64_MAX;
  uint64_t slots_;
  std::unique_ptr<uint64_t[]> tags_;
  // Not zero-filled: a large cache costs memory only for slots in use.
  std::unique_ptr<uint8_t[]> pages_;
};

} // namespace ferry
