// Write-protected guest RAM: a write to a protected page — one with data
// and one never touched — waits until that page is released, the page
// unchanged meanwhile; other pages stay protected; released pages take
// writes freely.

#include "agent/vmm/write_protect_region.hpp"
#include "common/error.hpp"

#include <sys/mman.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <thread>

using namespace ferry;
using namespace std::chrono_literals;

TEST(write_protect_region, a_write_waits_for_its_page_and_sees_it_unchanged_until_then) {
  constexpr uint64_t pages = 64;
  constexpr size_t pb = write_protect_region::page_bytes;
  void* m = ::mmap(nullptr, pages * pb, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(m, MAP_FAILED);
  auto* ram = static_cast<uint8_t*>(m);
  for (uint64_t p = 0; p < 32; ++p) // pages 32.. never touched
    std::memset(ram + p * pb, static_cast<int>(p + 1), pb);
  auto r = write_protect_region::create(ram, pages);
  if (!r)
    GTEST_SKIP() << "write-protect faults unavailable here: " << describe(r.error());
  ASSERT_TRUE((*r)->protect_all());
  for (uint64_t target : {uint64_t{5}, uint64_t{40}}) {
    SCOPED_TRACE(target);
    std::atomic<bool> written{false};
    std::thread writer{[&] {
      ram[target * pb + 7] = 0xee;
      written = true;
    }};
    auto f = (*r)->next_write(5s);
    ASSERT_TRUE(f) << describe(f.error());
    ASSERT_TRUE(*f);
    EXPECT_EQ(**f, target);
    std::this_thread::sleep_for(20ms);
    EXPECT_FALSE(written) << "the writer waits";
    EXPECT_EQ(ram[target * pb + 7], target < 32 ? target + 1 : 0) << "unchanged until released";
    ASSERT_TRUE((*r)->release(target, 1));
    writer.join();
    EXPECT_TRUE(written);
    EXPECT_EQ(ram[target * pb + 7], 0xee);
  }
  // Released: no fault. Still protected: a fault.
  ram[5 * pb] = 1;
  std::thread other{[&] { ram[6 * pb] = 2; }};
  auto f = (*r)->next_write(5s);
  ASSERT_TRUE(f && *f);
  EXPECT_EQ(**f, 6U);
  EXPECT_FALSE((*r)->release(60, 10)) << "outside the region";
  r->reset(); // releases everything on the way out
  other.join();
  EXPECT_EQ(ram[6 * pb], 2);
  ::munmap(m, pages * pb);
}
