#include "agent/convergence/dirty_limit.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>

namespace ferry {

using clock_type = std::chrono::steady_clock;

namespace {

constexpr uint64_t page_bytes = 4096;
constexpr uint64_t mib = 1u << 20;
constexpr auto slice = std::chrono::milliseconds(100);
// A brake this tight runs in 1 s slices: each slice costs one late re-hold
// (this thread waking a few ms late on a busy host), so fewer are better.
constexpr double long_slice_below = 0.01;
constexpr auto long_slice = std::chrono::milliseconds(1000);
constexpr double min_share = 0.0001; // 0.1 ms a second

} // namespace

vcpu_dirty_limit::vcpu_dirty_limit(guest& g)
  : g_(g), ring_(*g.dirty_ring()), vcpus_(g.vcpu_count()) {
  worker_.start("dirtylimit", [this] { run(); });
}

vcpu_dirty_limit::~vcpu_dirty_limit() {
  worker_.stop();
  release_all();
}

void vcpu_dirty_limit::release_all() {
  for (uint32_t i = 0; i < vcpus_.size(); ++i) {
    if (vcpus_[i].held)
      g_.hold_vcpu(i, false);
    vcpus_[i].held = false;
  }
}

void vcpu_dirty_limit::set(std::optional<uint32_t> cpu, uint64_t mib_per_s) {
  std::lock_guard lk{mtx_};
  for (uint32_t i = 0; i < vcpus_.size(); ++i) {
    if (cpu && *cpu != i)
      continue;
    auto& v = vcpus_[i];
    if (v.limit == 0 || mib_per_s == 0)
      v.share = 1.0; // a new brake starts released, a lifted one lets go
    v.limit = mib_per_s * mib;
    if (v.limit == 0 && v.held) {
      g_.hold_vcpu(i, false); // now, not at the end of the slice
      v.held = false;
    }
  }
  worker_.wake();
}

void vcpu_dirty_limit::set_period(uint64_t ms) {
  std::lock_guard lk{mtx_};
  period_ms_ = std::clamp<uint64_t>(ms, 1, 1000);
}

bool vcpu_dirty_limit::in_service() const {
  std::lock_guard lk{mtx_};
  return std::any_of(vcpus_.begin(), vcpus_.end(), [](const auto& v) { return v.limit != 0; });
}

std::vector<vcpu_dirty_limit::vcpu_figures> vcpu_dirty_limit::limited() const {
  std::lock_guard lk{mtx_};
  std::vector<vcpu_figures> out;
  for (uint32_t i = 0; i < vcpus_.size(); ++i)
    if (vcpus_[i].limit != 0)
      out.push_back({i, vcpus_[i].limit / mib, vcpus_[i].current / mib});
  return out;
}

uint64_t vcpu_dirty_limit::throttle_time_per_round_us() const {
  std::lock_guard lk{mtx_};
  const double ring_bytes = static_cast<double>(ring_.ring_entries()) * page_bytes;
  double longest = 0;
  for (const auto& v : vcpus_) {
    if (v.limit == 0 || v.current == 0)
      continue;
    const double round_us = ring_bytes / static_cast<double>(v.current) * 1e6;
    longest = std::max(longest, round_us * (1.0 - v.share));
  }
  return static_cast<uint64_t>(longest);
}

uint64_t vcpu_dirty_limit::ring_full_time_us() const {
  std::lock_guard lk{mtx_};
  if (vcpus_.empty())
    return 0;
  uint64_t sum = 0;
  for (const auto& v : vcpus_)
    sum += v.current;
  if (sum == 0)
    return 0;
  const double avg = static_cast<double>(sum) / static_cast<double>(vcpus_.size());
  return static_cast<uint64_t>(static_cast<double>(ring_.ring_entries()) * page_bytes / avg * 1e6);
}

void vcpu_dirty_limit::adjust(const kvm_dirty_ring::measured& m, double seconds) {
  for (size_t i = 0; i < vcpus_.size() && i < m.per_vcpu.size(); ++i) {
    auto& v = vcpus_[i];
    v.current = static_cast<uint64_t>(static_cast<double>(m.per_vcpu[i] * page_bytes) / seconds);
    if (v.limit == 0)
      continue;
    // Scale the running share toward 80 % of the quota. Far above it the
    // full ratio applies (a vCPU that rewrites a small working set shows
    // the same rate over a wide range of shares); near it the square root
    // damps the step, since measurements are noisy (the first write to a
    // page after each reset costs far more than the next). A vCPU that
    // dirtied nothing gets more time.
    const double target = 0.8 * static_cast<double>(v.limit);
    const double ratio = v.current == 0 ? 2.0 : target / static_cast<double>(v.current);
    const double step = ratio < 0.5 ? ratio : std::sqrt(ratio);
    v.share = std::clamp(v.share * std::clamp(step, 0.1, 2.0), min_share, 1.0);
  }
}

void vcpu_dirty_limit::run() {
  // The ring counting window, while some vCPU is limited.
  bool counting = false;
  kvm_dirty_ring::window_id window = 0;
  auto period_start = clock_type::now();
  std::unique_lock lk{mtx_};
  while (!worker_.stopping()) {
    const bool active =
      std::any_of(vcpus_.begin(), vcpus_.end(), [](const auto& v) { return v.limit != 0; });
    if (active && !counting) {
      lk.unlock();
      auto w = ring_.window_open();
      lk.lock();
      if (w) {
        window = *w;
        counting = true;
      }
      period_start = clock_type::now();
    } else if (!active && counting) {
      release_all();
      ring_.window_close(window);
      counting = false;
      for (auto& v : vcpus_)
        v.current = 0;
    }
    if (!counting) {
      worker_.wait(lk);
      continue;
    }
    const auto now = clock_type::now();
    if (now - period_start >= std::chrono::milliseconds(period_ms_)) {
      const double secs = std::chrono::duration<double>(now - period_start).count();
      lk.unlock();
      auto m = ring_.window_read(window, true);
      lk.lock();
      period_start = now;
      if (m)
        adjust(*m, secs);
    }
    // One slice: every limited vCPU runs for its share, then waits.
    const auto slice_start = clock_type::now();
    const bool tight = std::any_of(vcpus_.begin(), vcpus_.end(), [](const auto& v) {
      return v.limit != 0 && v.share < long_slice_below;
    });
    const auto this_slice = tight ? long_slice : slice;
    for (uint32_t i = 0; i < vcpus_.size(); ++i) {
      if (vcpus_[i].held) {
        g_.hold_vcpu(i, false);
        vcpus_[i].held = false;
      }
    }
    std::vector<std::pair<double, uint32_t>> order;
    for (uint32_t i = 0; i < vcpus_.size(); ++i)
      if (vcpus_[i].limit != 0 && vcpus_[i].share < 1.0)
        order.emplace_back(vcpus_[i].share, i);
    std::sort(order.begin(), order.end());
    for (const auto& [share, i] : order) {
      const auto until =
        slice_start + std::chrono::duration_cast<clock_type::duration>(this_slice * share);
      worker_.wait_until(lk, until);
      if (worker_.stopping())
        break;
      if (vcpus_[i].limit == 0) // lifted meanwhile
        continue;
      g_.hold_vcpu(i, true);
      vcpus_[i].held = true;
    }
    // A new period's measurement is due within the slice: end it there.
    const auto period_end = period_start + std::chrono::milliseconds(period_ms_);
    worker_.wait_until(lk,
                       std::min(slice_start + this_slice, std::max(period_end, clock_type::now())));
  }
  if (counting)
    ring_.window_close(window);
}

} // namespace ferry
