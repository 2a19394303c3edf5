#include "agent/convergence/cpu_throttle.hpp"

#include <pthread.h>

#include <chrono>

namespace ferry {

namespace {
constexpr auto timeslice = std::chrono::milliseconds(10);
} // namespace

cpu_throttle::cpu_throttle(guest& g) : g_(g) {
  thread_ = std::thread{[this] {
    ::pthread_setname_np(::pthread_self(), "mig-throttle");
    run();
  }};
}

cpu_throttle::~cpu_throttle() {
  {
    std::lock_guard lk{mtx_};
    quit_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void cpu_throttle::set(unsigned pct) {
  pct_ = std::min(pct, 99U);
  cv_.notify_all();
}

void cpu_throttle::run() {
  std::unique_lock lk{mtx_};
  while (!quit_) {
    const unsigned pct = pct_;
    if (pct == 0) {
      cv_.wait(lk, [&] { return quit_ || pct_ != 0; });
      continue;
    }
    // Let it run one timeslice, then hold it stopped for its share.
    cv_.wait_for(lk, timeslice, [&] { return quit_ || pct_ == 0; });
    if (quit_ || pct_ == 0)
      continue;
    const auto stopped = timeslice * pct / (100 - pct);
    auto hold = g_.pause();
    cv_.wait_for(lk, stopped, [&] { return quit_ || pct_ == 0; });
  }
}

} // namespace ferry
