#include "agent/migration/rate_limiter.hpp"

#include <algorithm>
#include <thread>

namespace ferry {

namespace {
constexpr auto window = std::chrono::milliseconds(100);
}

bool rate_limiter::take(uint64_t bytes, std::chrono::steady_clock::time_point& wait_until) {
  using clock = std::chrono::steady_clock;
  const uint64_t limit = limit_;
  if (limit == 0)
    return true;
  std::lock_guard lk{mtx_};
  const auto now = clock::now();
  const uint64_t budget = limit / 10;
  if (now - window_start_ >= window) {
    // Each window that passed pays off one budget of what was sent: a
    // record larger than a window's budget (it goes alone) is paid for
    // by the windows after it, so the limit holds on average too. Idle
    // time earns no credit for a later burst.
    const auto windows = static_cast<uint64_t>((now - window_start_) / window);
    const uint64_t paid = windows > used_ / std::max<uint64_t>(budget, 1) + 1
                            ? used_
                            : std::min(used_, windows * budget);
    used_ -= paid;
    window_start_ = used_ == 0 ? now : window_start_ + window * static_cast<int64_t>(windows);
  }
  if (used_ == 0 || used_ + bytes <= budget) {
    used_ += bytes;
    return true;
  }
  wait_until = window_start_ + window;
  return false;
}

bool rate_limiter::try_acquire(uint64_t bytes) {
  std::chrono::steady_clock::time_point unused;
  return take(bytes, unused);
}

void rate_limiter::acquire(uint64_t bytes, const std::atomic<bool>& stop,
                           const std::atomic<bool>* cut) {
  using clock = std::chrono::steady_clock;
  while (!stop && (cut == nullptr || !*cut)) {
    clock::time_point wait_until;
    if (take(bytes, wait_until))
      return;
    std::this_thread::sleep_until(
      std::min(wait_until, clock::now() + std::chrono::milliseconds(10)));
  }
}

} // namespace ferry
