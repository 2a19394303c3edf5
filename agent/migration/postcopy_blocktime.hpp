#pragma once
// postcopy-blocktime (the capability): how long the guest's vCPUs waited for
// missing pages on a postcopy destination. A vCPU is blocked from the moment
// its fault is read until the page it waits on is placed; the guest is
// blocked while every vCPU is (QEMU's postcopy-blocktime), and each vCPU's
// own sum is postcopy-vcpu-blocktime. Faults of other threads (the agent's
// own) do not count. Fed by the fault thread and the placing threads.

#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <vector>

namespace ferry {

class postcopy_blocktime {
public:
  using clock = std::chrono::steady_clock;

  // The vCPUs' thread ids, in vCPU order, asked for again when a fault
  // names a thread not among them (vCPU threads start with the guest,
  // after the tracker).
  explicit postcopy_blocktime(std::function<std::vector<int>()> vcpu_tids);

  // Thread `tid` waits on page `pfn` since `at`.
  void faulted(int tid, uint64_t pfn, clock::time_point at);
  // Page `pfn` is there: whoever waited on it runs again.
  void placed(uint64_t pfn, clock::time_point at);

  // Milliseconds all vCPUs were blocked at once, and each one's.
  uint32_t all_blocked_ms() const;
  std::vector<uint32_t> per_vcpu_ms() const;

private:
  struct wait {
    uint64_t pfn = 0;
    clock::time_point since;
  };
  mutable std::mutex mtx_;
  std::function<std::vector<int>()> source_;
  std::vector<int> tids_;
  std::vector<std::optional<wait>> waiting_; // per vCPU
  std::vector<clock::duration> blocked_;     // per vCPU
  size_t blocked_now_ = 0;
  clock::time_point all_since_;
  clock::duration all_blocked_{};
};

} // namespace ferry
