#include "agent/convergence/cpu_throttle.hpp"

#include <chrono>

namespace ferry {

namespace {
constexpr auto timeslice = std::chrono::milliseconds(10);
} // namespace

cpu_throttle::cpu_throttle(guest& g) : g_(g) {
  worker_.start("mig-throttle", [this] { run(); });
}

cpu_throttle::~cpu_throttle() {
  worker_.stop();
}

void cpu_throttle::set(unsigned pct) {
  {
    std::lock_guard lk{mtx_}; // a wake between the loop's check and its wait is not lost
    pct_ = std::min(pct, 99U);
  }
  worker_.wake();
}

void cpu_throttle::run() {
  std::unique_lock lk{mtx_};
  while (!worker_.stopping()) {
    const unsigned pct = pct_;
    if (pct == 0) {
      worker_.wait(lk, [&] { return pct_ != 0; });
      continue;
    }
    // Let it run one timeslice, then hold it stopped for its share.
    const auto released = [&] { return pct_ == 0; };
    if (!worker_.wait_for(lk, timeslice, released) || pct_ == 0)
      continue;
    const auto stopped = timeslice * pct / (100 - pct);
    auto hold = g_.pause();
    worker_.wait_for(lk, stopped, released);
  }
}

} // namespace ferry
