#include "agent/vmm/software_dirty_log.hpp"

#include "agent/vmm/memory_layout.hpp"

namespace ferry {

software_dirty_log::software_dirty_log(uint64_t pages)
  : pages_(pages), words_(new std::atomic<uint64_t>[(pages + 63) / 64]) {
  for (uint64_t i = 0; i < (pages + 63) / 64; ++i)
    words_[i].store(0, std::memory_order_relaxed);
}

void software_dirty_log::mark_page(uint64_t page) {
  if (page >= pages_ || !active_.load(std::memory_order_relaxed))
    return;
  words_[page / 64].fetch_or(uint64_t{1} << (page % 64), std::memory_order_release);
}

void software_dirty_log::mark(uint64_t guest_addr, uint64_t len) {
  if (len == 0)
    return;
  const uint64_t last = (guest_addr + len - 1) / page_size;
  for (uint64_t p = guest_addr / page_size; p <= last; ++p)
    mark_page(p);
}

caf::expected<void> software_dirty_log::start() {
  for (uint64_t i = 0; i < (pages_ + 63) / 64; ++i)
    words_[i].store(0, std::memory_order_relaxed);
  active_.store(true, std::memory_order_release);
  return {};
}

void software_dirty_log::stop() {
  active_.store(false, std::memory_order_release);
}

caf::expected<void> software_dirty_log::sync(dirty_bitmap& out) {
  const uint64_t words = (pages_ + 63) / 64;
  for (uint64_t i = 0; i < words; ++i) {
    uint64_t w = words_[i].exchange(0, std::memory_order_acq_rel);
    if (w != 0)
      out.or_words(i * 64, &w, std::min<uint64_t>(64, pages_ - i * 64));
  }
  return {};
}

} // namespace ferry
