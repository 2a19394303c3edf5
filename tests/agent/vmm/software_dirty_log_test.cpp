#include "agent/vmm/software_dirty_log.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <random>
#include <set>
#include <thread>

using namespace ferry;

TEST(software_dirty_log, reports_exactly_the_marked_pages) {
  software_dirty_log log{1024};
  ASSERT_TRUE(log.start());
  std::mt19937_64 rng{1};
  for (int round = 0; round < 20; ++round) {
    std::set<uint64_t> oracle;
    for (int i = 0; i < 100; ++i) {
      const uint64_t addr = rng() % (uint64_t{1024} * 4096);
      const uint64_t len = 1 + rng() % 9000;
      log.mark(addr, len);
      for (uint64_t p = addr / 4096; p <= (addr + len - 1) / 4096 && p < 1024; ++p)
        oracle.insert(p);
    }
    dirty_bitmap out{1024};
    ASSERT_TRUE(log.sync(out));
    EXPECT_EQ(out.set_pages(), std::vector<uint64_t>(oracle.begin(), oracle.end()));
    dirty_bitmap again{1024};
    ASSERT_TRUE(log.sync(again));
    EXPECT_TRUE(again.empty()) << "a sync consumes what it reports";
  }
}

TEST(software_dirty_log, marks_before_start_and_after_stop_are_ignored) {
  software_dirty_log log{64};
  log.mark_page(3);
  ASSERT_TRUE(log.start());
  log.mark_page(5);
  log.mark_page(64); // out of range: ignored
  dirty_bitmap out{64};
  ASSERT_TRUE(log.sync(out));
  EXPECT_EQ(out.set_pages(), std::vector<uint64_t>{5});
  log.stop();
  log.mark_page(6);
  ASSERT_TRUE(log.start());
  dirty_bitmap out2{64};
  ASSERT_TRUE(log.sync(out2));
  EXPECT_TRUE(out2.empty());
}

// Concurrent writers and a syncing reader: the union of all syncs is every
// page ever marked — nothing falls between two syncs.
TEST(software_dirty_log, no_mark_is_lost_under_concurrent_sync) {
  constexpr uint64_t pages = 4096;
  software_dirty_log log{pages};
  ASSERT_TRUE(log.start());
  std::atomic<bool> done{false};
  dirty_bitmap seen{pages};
  std::thread reader{[&] {
    while (!done.load())
      ASSERT_TRUE(log.sync(seen));
  }};
  std::vector<std::thread> writers;
  for (uint64_t w = 0; w < 2; ++w)
    writers.emplace_back([&, w] {
      for (uint64_t p = w; p < pages; p += 2)
        log.mark_page(p);
    });
  for (auto& t : writers)
    t.join();
  done = true;
  reader.join();
  ASSERT_TRUE(log.sync(seen));
  EXPECT_EQ(seen.count(), pages);
}
