#include "agent/vmm/ram_prefill.hpp"

#include <fcntl.h>
#include <pthread.h>
#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <string>
#include <system_error>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23 // Linux 5.14; bookworm's headers may predate it
#endif

namespace ferry {

namespace {
// Small enough that the receiving threads soon find populated memory ahead
// of them and that stopping is quick; large enough to amortise the call.
constexpr uint64_t chunk = uint64_t{8} << 20;
} // namespace

ram_prefill::ram_prefill(uint8_t* base, uint64_t size, int fd, unsigned threads)
  : base_(base), size_(size), fd_(fd) {
  // No more workers than chunks: a small guest's RAM is one worker's call,
  // and a thread that would find nothing left only costs its start.
  const uint64_t chunks = std::max<uint64_t>(1, (size + chunk - 1) / chunk);
  threads = static_cast<unsigned>(std::clamp<uint64_t>(threads, 1, chunks));
  for (unsigned k = 0; k < threads; ++k) {
    try {
      workers_.emplace_back([this, k] {
        ::pthread_setname_np(::pthread_self(), ("ram-fill/" + std::to_string(k)).c_str());
        work();
      });
    } catch (const std::system_error&) {
      break; // fewer workers: the memory is populated later or on first touch
    }
  }
}

ram_prefill::~ram_prefill() {
  stop_ = true;
  for (auto& w : workers_)
    if (w.joinable())
      w.join();
}

void ram_prefill::work() {
  bool use_madvise = true;
  while (!stop_.load(std::memory_order_relaxed)) {
    const uint64_t at = next_.fetch_add(chunk, std::memory_order_relaxed);
    if (at >= size_)
      return;
    const uint64_t len = std::min(chunk, size_ - at);
    if (use_madvise && ::madvise(base_ + at, len, MADV_POPULATE_WRITE) != 0) {
      if (errno != EINVAL || fd_ < 0)
        return; // out of memory or a signal: first touches do the rest
      use_madvise = false;
    }
    if (!use_madvise && ::fallocate(fd_, 0, static_cast<off_t>(at), static_cast<off_t>(len)) != 0)
      return;
    done_.fetch_add(len, std::memory_order_relaxed);
  }
}

} // namespace ferry
