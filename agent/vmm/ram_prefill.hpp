#pragma once
// Pays the first touch of an incoming guest's RAM ahead of its pages: named
// threads ("ram-fill/N") populate the mapping in chunks with
// MADV_POPULATE_WRITE from the moment the guest exists, so the receiving
// threads write into memory that is already there instead of faulting each
// 4 KiB page in turn. Populating never changes a page's contents, so it may
// race freely with the pages being written.

#include <atomic>
#include <cstdint>
#include <memory>
#include <thread>
#include <vector>

namespace ferry {

class ram_prefill {
public:
  // Starts up to `threads` workers over [base, base + size); fd is the
  // memfd behind the mapping (fallocate is the fallback on kernels without
  // MADV_POPULATE_WRITE), or -1.
  ram_prefill(uint8_t* base, uint64_t size, int fd, unsigned threads);
  // Stops the workers at their next chunk and joins them: the mapping may
  // go away right after.
  ~ram_prefill();
  ram_prefill(const ram_prefill&) = delete;
  ram_prefill& operator=(const ram_prefill&) = delete;

  // Bytes populated so far.
  uint64_t done_bytes() const { return done_.load(std::memory_order_relaxed); }

private:
  void work();

  uint8_t* base_;
  uint64_t size_;
  int fd_;
  std::atomic<uint64_t> next_{0};
  std::atomic<uint64_t> done_{0};
  std::atomic<bool> stop_{false};
  std::vector<std::thread> workers_;
};

} // namespace ferry
