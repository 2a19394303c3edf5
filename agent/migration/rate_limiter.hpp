#pragma once
// max-bandwidth for a migration: every channel draws from one budget per
// 100 ms window (QEMU's granularity), so the limit holds for the sum of the
// channels. 0 means unlimited, as in QEMU. The limit may change while the
// migration runs (migrate-set-parameters max-bandwidth).

#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>

namespace ferry {

class rate_limiter {
public:
  void set_limit(uint64_t bytes_per_second) { limit_ = bytes_per_second; }
  uint64_t limit() const { return limit_; }
  // Blocks until `bytes` fit in the budget or `stop` (or `cut`: the
  // caller's channel, which may fail between writes) is set.
  void acquire(uint64_t bytes, const std::atomic<bool>& stop,
               const std::atomic<bool>* cut = nullptr);
  // The same without waiting: true when `bytes` fit now (and are counted).
  bool try_acquire(uint64_t bytes);

private:
  // Counts `bytes` if they fit now; else when the budget frees up.
  bool take(uint64_t bytes, std::chrono::steady_clock::time_point& wait_until);
  std::atomic<uint64_t> limit_{0};
  std::mutex mtx_;
  std::chrono::steady_clock::time_point window_start_{};
  uint64_t used_ = 0;
};

} // namespace ferry
