#pragma once
// auto-converge's brake: slows a guest to (100 - pct)% of its speed by
// stopping it for a while after every 10 ms it runs, as QEMU throttles
// vCPUs (stopped for pct / (100 - pct) of a 10 ms timeslice). Runs on its
// own thread ("mig-throttle") while the percentage is above zero; the guest
// is paused through its pause guards, so vCPUs are parked only at safe
// points and the dirty log keeps working.

#include "agent/vmm/guest.hpp"
#include "common/background_worker.hpp"

#include <atomic>
#include <mutex>

namespace ferry {

class cpu_throttle {
public:
  explicit cpu_throttle(guest& g);
  ~cpu_throttle(); // stops throttling; the guest runs at full speed again

  // 0 stops throttling; at most 99.
  void set(unsigned pct);
  unsigned percentage() const { return pct_; }

private:
  void run();

  guest& g_;
  std::atomic<unsigned> pct_{0};
  std::mutex mtx_;
  background_worker worker_{mtx_}; // "mig-throttle"; last: stops first
};

} // namespace ferry
