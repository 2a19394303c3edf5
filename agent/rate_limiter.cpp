#include "agent/rate_limiter.hpp"

#include <thread>

namespace ferry {

void rate_limiter::acquire(uint64_t bytes, const std::atomic<bool>& stop) {
  using clock = std::chrono::steady_clock;
  constexpr auto window = std::chrono::milliseconds(100);
  while (!stop) {
    const uint64_t limit = limit_;
    if (limit == 0)
      return;
    clock::time_point wait_until;
    {
      std::lock_guard lk{mtx_};
      const auto now = clock::now();
      if (now - window_start_ >= window) {
        window_start_ = now;
        used_ = 0;
      }
      const uint64_t budget = limit / 10;
      // A record larger than a whole window's budget still goes, alone.
      if (used_ == 0 || used_ + bytes <= budget) {
        used_ += bytes;
        return;
      }
      wait_until = window_start_ + window;
    }
    std::this_thread::sleep_until(
      std::min(wait_until, clock::now() + std::chrono::milliseconds(10)));
  }
}

} // namespace ferry
