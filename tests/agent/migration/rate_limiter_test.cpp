// max-bandwidth's limiter: the limit holds on average, also for records
// larger than one 100 ms window's budget.

#include "agent/migration/rate_limiter.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <thread>

namespace ferry {
namespace {

double seconds_to_send(uint64_t limit, uint64_t record, int records) {
  rate_limiter l;
  l.set_limit(limit);
  std::atomic<bool> stop{false};
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < records; ++i)
    l.acquire(record, stop);
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

TEST(rate_limiter, small_records_keep_to_the_limit) {
  // 2 MiB at 4 MiB/s in 64 KiB records: about half a second (the first
  // window's budget goes at once).
  const double s = seconds_to_send(4u << 20, 64u << 10, 32);
  EXPECT_GT(s, 0.35);
  EXPECT_LT(s, 0.8);
}

TEST(rate_limiter, records_larger_than_a_window_are_paid_for_afterwards) {
  // 1 MiB records at 2 MiB/s (a window's budget is 205 KiB): 2 MiB takes
  // about a second, not the two windows it would if each went free.
  const double s = seconds_to_send(2u << 20, 1u << 20, 3);
  EXPECT_GT(s, 0.8);
  EXPECT_LT(s, 1.4);
}

TEST(rate_limiter, unlimited_never_waits) {
  EXPECT_LT(seconds_to_send(0, 1u << 30, 100), 0.05);
}

TEST(rate_limiter, try_acquire_takes_what_fits_now_and_never_waits) {
  rate_limiter l;
  EXPECT_TRUE(l.try_acquire(1u << 30)) << "no limit: anything fits";
  l.set_limit(10u << 20); // 1 MiB per 100 ms window
  EXPECT_TRUE(l.try_acquire(512u << 10));
  EXPECT_TRUE(l.try_acquire(512u << 10));
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_FALSE(l.try_acquire(4096)) << "the window's budget is spent";
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(20));
  std::this_thread::sleep_for(std::chrono::milliseconds(110));
  EXPECT_TRUE(l.try_acquire(4096)) << "the next window pays it off";
}

} // namespace
} // namespace ferry
