// Guest RAM under userfaultfd (the postcopy destination's memory), on a
// real memfd mapping: an access to a page not yet placed waits for it and
// then sees the whole page; a write waits too and lands on top of it; a
// page placed twice keeps its first content; a page outside RAM is
// refused; unregistering releases whoever still waits. Skipped, with the
// reason, where the kernel does not let this process use userfaultfd.

#include "agent/vmm/userfault_region.hpp"
#include "common/error.hpp"

#include <gtest/gtest.h>

#include <sys/mman.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstring>
#include <thread>

namespace ferry {
namespace {

using namespace std::chrono_literals;

constexpr uint64_t pages = 64;
constexpr size_t page = userfault_region::page_bytes;

struct shared_ram {
  uint8_t* base = nullptr;
  shared_ram() {
    const int fd = ::memfd_create("userfault-test", MFD_CLOEXEC);
    EXPECT_GE(fd, 0);
    EXPECT_EQ(::ftruncate(fd, static_cast<off_t>(pages * page)), 0);
    void* p = ::mmap(nullptr, pages * page, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    EXPECT_NE(p, MAP_FAILED);
    base = static_cast<uint8_t*>(p);
    ::close(fd);
  }
  ~shared_ram() { ::munmap(base, pages * page); }
  shared_ram(const shared_ram&) = delete;
  shared_ram& operator=(const shared_ram&) = delete;
};

std::array<uint8_t, page> pattern(uint8_t seed) {
  std::array<uint8_t, page> p{};
  for (size_t i = 0; i < page; ++i)
    p[i] = static_cast<uint8_t>(seed + i * 13);
  return p;
}

uint8_t read_byte(const uint8_t* p) {
  return *static_cast<const volatile uint8_t*>(p);
}

#define REGION_OR_SKIP(region, ram)                                                                \
  auto region##_made = userfault_region::create((ram).base, pages);                                \
  if (!region##_made)                                                                              \
    GTEST_SKIP() << "userfaultfd unavailable: " << describe(region##_made.error());                \
  auto& region = *region##_made

TEST(userfault_region, a_read_waits_for_its_page_and_sees_all_of_it) {
  shared_ram ram;
  REGION_OR_SKIP(region, ram);
  std::atomic<bool> done{false};
  uint8_t seen = 0;
  std::thread reader{[&] {
    seen = read_byte(ram.base + 5 * page + 100);
    done = true;
  }};
  // Until the page is placed a thread waits in the kernel: nothing fatal
  // (no early return) between its start and its join.
  auto fault = region->next_fault(5s);
  EXPECT_TRUE(fault && *fault && (*fault)->pfn == 5U) << "the fault on page 5 is reported";
  EXPECT_TRUE(fault && *fault && (*fault)->tid > 0 && (*fault)->tid != ::gettid())
    << "with the id of the thread that waits";
  std::this_thread::sleep_for(20ms);
  EXPECT_FALSE(done) << "the read went on before its page was there";
  const auto content = pattern(7);
  auto placed = region->place(5, content.data());
  EXPECT_TRUE(placed && *placed);
  reader.join();
  EXPECT_EQ(seen, content[100]);
  EXPECT_EQ(std::memcmp(ram.base + 5 * page, content.data(), page), 0);
  EXPECT_TRUE(region->placed(5));
  EXPECT_FALSE(region->placed(4));
  EXPECT_EQ(region->placed_count(), 1U);
}

TEST(userfault_region, a_write_waits_and_lands_on_the_placed_page) {
  shared_ram ram;
  REGION_OR_SKIP(region, ram);
  std::thread writer{[&] { *static_cast<volatile uint8_t*>(ram.base + 7 * page) = 0xab; }};
  auto fault = region->next_fault(5s);
  EXPECT_TRUE(fault && *fault && (*fault)->pfn == 7U);
  auto content = pattern(1);
  EXPECT_TRUE(region->place(7, content.data()));
  writer.join();
  content[0] = 0xab;
  EXPECT_EQ(std::memcmp(ram.base + 7 * page, content.data(), page), 0);
}

TEST(userfault_region, a_page_placed_twice_keeps_its_first_content_and_outside_ram_is_refused) {
  shared_ram ram;
  REGION_OR_SKIP(region, ram);
  const auto first = pattern(3);
  const auto second = pattern(4);
  auto a = region->place(9, first.data());
  ASSERT_TRUE(a && *a);
  auto b = region->place(9, second.data());
  ASSERT_TRUE(b);
  EXPECT_FALSE(*b) << "a duplicate placement is reported as such";
  EXPECT_EQ(std::memcmp(ram.base + 9 * page, first.data(), page), 0);
  EXPECT_EQ(region->placed_count(), 1U);
  auto outside = region->place(pages, first.data());
  ASSERT_FALSE(outside);
  EXPECT_NE(describe(outside.error()).find("outside RAM"), std::string::npos)
    << describe(outside.error());
  // No access waits: no fault to report.
  auto none = region->next_fault(10ms);
  ASSERT_TRUE(none);
  EXPECT_FALSE(*none);
}

TEST(userfault_region, a_run_of_pages_lands_in_one_copy_and_stops_at_one_placed_before) {
  shared_ram ram;
  REGION_OR_SKIP(region, ram);
  std::vector<uint8_t> run(4 * page);
  for (size_t i = 0; i < 4; ++i)
    std::memcpy(run.data() + i * page, pattern(static_cast<uint8_t>(10 + i)).data(), page);
  auto a = region->place_run(30, run.data(), 4);
  ASSERT_TRUE(a && *a);
  EXPECT_EQ(std::memcmp(ram.base + 30 * page, run.data(), run.size()), 0);
  EXPECT_EQ(region->placed_count(), 4U);
  // Pages 28..31: 28 and 29 are new, 30 was placed: the run stops there.
  auto b = region->place_run(28, run.data(), 4);
  ASSERT_TRUE(b);
  EXPECT_FALSE(*b) << "a page placed before is reported";
  EXPECT_TRUE(region->placed(28));
  EXPECT_TRUE(region->placed(29));
  EXPECT_EQ(std::memcmp(ram.base + 30 * page, run.data(), page), 0) << "page 30 kept";
  EXPECT_EQ(region->placed_count(), 6U);
  EXPECT_FALSE(region->place_run(pages - 2, run.data(), 4)) << "a run leaving RAM is refused";
}

TEST(userfault_region, two_threads_on_one_page_both_go_on_after_one_placement) {
  shared_ram ram;
  REGION_OR_SKIP(region, ram);
  std::atomic<int> through{0};
  auto touch = [&] {
    (void) read_byte(ram.base + 11 * page + 1);
    ++through;
  };
  std::thread a{touch};
  std::thread b{touch};
  auto fault = region->next_fault(5s);
  EXPECT_TRUE(fault && *fault && (*fault)->pfn == 11U);
  std::this_thread::sleep_for(20ms);
  EXPECT_EQ(through, 0);
  const auto content = pattern(9);
  EXPECT_TRUE(region->place(11, content.data()));
  a.join();
  b.join();
  EXPECT_EQ(through, 2);
}

TEST(userfault_region, unregistering_releases_a_waiting_access) {
  shared_ram ram;
  uint8_t seen = 0xff;
  std::thread reader;
  {
    REGION_OR_SKIP(region, ram);
    reader = std::thread{[&] { seen = read_byte(ram.base + 20 * page); }};
    auto fault = region->next_fault(5s);
    EXPECT_TRUE(fault && *fault);
  }
  reader.join();
  EXPECT_EQ(seen, 0) << "an absent page reads as zero once nobody serves faults";
}

} // namespace
} // namespace ferry
