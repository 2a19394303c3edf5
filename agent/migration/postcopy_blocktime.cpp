#include "agent/migration/postcopy_blocktime.hpp"

#include <algorithm>

namespace ferry {

namespace {

uint32_t to_ms(std::chrono::steady_clock::duration d) {
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(d).count();
  return static_cast<uint32_t>(std::clamp<int64_t>(ms, 0, UINT32_MAX));
}

} // namespace

postcopy_blocktime::postcopy_blocktime(std::function<std::vector<int>()> vcpu_tids)
  : source_(std::move(vcpu_tids)), tids_(source_()), waiting_(tids_.size()),
    blocked_(tids_.size()) {}

void postcopy_blocktime::faulted(int tid, uint64_t pfn, clock::time_point at) {
  std::lock_guard lk{mtx_};
  if (tid == 0)
    return;
  auto it = std::find(tids_.begin(), tids_.end(), tid);
  if (it == tids_.end()) {
    // The vCPU count is fixed; only ids of threads not started yet change.
    auto now = source_();
    if (now.size() == tids_.size())
      tids_ = std::move(now);
    it = std::find(tids_.begin(), tids_.end(), tid);
    if (it == tids_.end())
      return;
  }
  auto& w = waiting_[static_cast<size_t>(it - tids_.begin())];
  if (w)
    return; // a thread waits on one page at a time; a repeat is the same wait
  w = wait{pfn, at};
  if (++blocked_now_ == tids_.size())
    all_since_ = at;
}

void postcopy_blocktime::placed(uint64_t pfn, clock::time_point at) {
  std::lock_guard lk{mtx_};
  for (size_t i = 0; i < waiting_.size(); ++i) {
    auto& w = waiting_[i];
    if (!w || w->pfn != pfn)
      continue;
    if (blocked_now_ == tids_.size())
      all_blocked_ += at - all_since_;
    blocked_[i] += at - w->since;
    w.reset();
    --blocked_now_;
  }
}

uint32_t postcopy_blocktime::all_blocked_ms() const {
  std::lock_guard lk{mtx_};
  return to_ms(all_blocked_);
}

std::vector<uint32_t> postcopy_blocktime::per_vcpu_ms() const {
  std::lock_guard lk{mtx_};
  std::vector<uint32_t> out;
  for (const auto& d : blocked_)
    out.push_back(to_ms(d));
  return out;
}

} // namespace ferry
