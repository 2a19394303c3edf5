// postcopy-blocktime: per-vCPU waits from fault to placement, and the time
// every vCPU waited at once; other threads' faults do not count.
#include "agent/migration/postcopy_blocktime.hpp"

#include <gtest/gtest.h>

namespace ferry {
namespace {

using namespace std::chrono_literals;
using clock_type = postcopy_blocktime::clock;

TEST(postcopy_blocktime, sums_each_vcpus_waits_and_the_overlap_of_all) {
  postcopy_blocktime b{[] { return std::vector<int>{101, 102}; }};
  const auto t0 = clock_type::now();
  b.faulted(101, 7, t0);        // vCPU 0 waits on page 7 from 0 ms
  b.faulted(102, 9, t0 + 10ms); // vCPU 1 on page 9 from 10 ms: all blocked
  b.faulted(555, 7, t0 + 11ms); // not a vCPU: ignored
  b.placed(7, t0 + 30ms);       // vCPU 0 runs again at 30 ms
  b.faulted(101, 9, t0 + 40ms); // and waits on page 9 too: all blocked again
  b.placed(9, t0 + 50ms);       // both run
  EXPECT_EQ(b.per_vcpu_ms(), (std::vector<uint32_t>{30 + 10, 40}));
  EXPECT_EQ(b.all_blocked_ms(), 20U + 10U);
}

TEST(postcopy_blocktime, a_page_nobody_waits_on_and_a_repeated_fault_change_nothing) {
  postcopy_blocktime b{[] { return std::vector<int>{1}; }};
  const auto t0 = clock_type::now();
  b.placed(3, t0);
  b.faulted(1, 4, t0);
  b.faulted(1, 4, t0 + 5ms); // the same wait, read again
  b.placed(4, t0 + 8ms);
  EXPECT_EQ(b.per_vcpu_ms(), std::vector<uint32_t>{8});
  EXPECT_EQ(b.all_blocked_ms(), 8U) << "one vCPU blocked is the whole guest blocked";
  b.faulted(0, 4, t0 + 9ms); // a thread the kernel did not name
  b.placed(4, t0 + 20ms);
  EXPECT_EQ(b.per_vcpu_ms(), std::vector<uint32_t>{8});
}

TEST(postcopy_blocktime, learns_the_ids_of_vcpu_threads_that_started_after_it) {
  std::vector<int> ids{0, 0}; // the guest has not started yet
  postcopy_blocktime b{[&] { return ids; }};
  ids = {11, 12};
  const auto t0 = clock_type::now();
  b.faulted(12, 1, t0);
  b.placed(1, t0 + 3ms);
  EXPECT_EQ(b.per_vcpu_ms(), (std::vector<uint32_t>{0, 3}));
}

} // namespace
} // namespace ferry
