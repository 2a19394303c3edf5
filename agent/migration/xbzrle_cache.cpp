#include "agent/migration/xbzrle_cache.hpp"

#include <algorithm>
#include <cstring>

namespace ferry {

xbzrle_cache::xbzrle_cache(uint64_t bytes)
  : slots_(std::max<uint64_t>(1, bytes / page_bytes)), tags_(std::make_unique<uint64_t[]>(slots_)),
    pages_(std::make_unique_for_overwrite<uint8_t[]>(slots_ * page_bytes)) {
  std::fill_n(tags_.get(), slots_, empty);
}

uint8_t* xbzrle_cache::find(uint64_t pfn) {
  const uint64_t slot = pfn % slots_;
  return tags_[slot] == pfn ? pages_.get() + slot * page_bytes : nullptr;
}

void xbzrle_cache::insert(uint64_t pfn, const uint8_t* page) {
  const uint64_t slot = pfn % slots_;
  tags_[slot] = pfn;
  std::memcpy(pages_.get() + slot * page_bytes, page, page_bytes);
}

} // namespace ferry
