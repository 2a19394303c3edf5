#pragma once
// Guest RAM whose pages arrive after the guest has started using it (the
// destination of a postcopy migration): the region is registered with
// userfaultfd in missing-page mode, so the first access to a page not yet
// there blocks the accessing thread — a vCPU, the -accel none dirtier, the
// agent itself — until the page is placed. Placement is atomic
// (UFFDIO_COPY): a reader sees the old absence or the whole new page,
// never part of one. The pages placed so far are kept as a bitmap, which is
// what a recovering migration reconciles against.
//
// Linux's userfaultfd needs root (or vm.unprivileged_userfaultfd=1, or
// access to /dev/userfaultfd); create() says so when it is refused.

#include <caf/expected.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

namespace ferry {

class userfault_region {
public:
  static constexpr size_t page_bytes = 4096;

  // Registers `pages` pages at `base` (page-aligned; anonymous or shared
  // memory such as a memfd mapping, every page still absent).
  static caf::expected<std::unique_ptr<userfault_region>> create(uint8_t* base, uint64_t pages);
  ~userfault_region();
  userfault_region(const userfault_region&) = delete;
  userfault_region& operator=(const userfault_region&) = delete;

  // Puts `data` (page_bytes) at page `pfn` and wakes every thread waiting
  // on it. False, and the page left as it is, when it was placed before (a
  // duplicate); an error for a page outside the region. Threads may place
  // distinct pages at once.
  caf::expected<bool> place(uint64_t pfn, const uint8_t* data) { return place_run(pfn, data, 1); }
  // `count` neighbouring pages from `data` in one copy, from page `pfn` on.
  // False when one of them was placed before: those before it are placed,
  // it and those after are left as they are.
  caf::expected<bool> place_run(uint64_t pfn, const uint8_t* data, uint64_t count);
  // The next waiting access: its page and the thread that waits (the
  // kernel's id; 0 where it does not say).
  struct fault {
    uint64_t pfn = 0;
    int tid = 0;
  };
  // The next waiting access, waiting up to `timeout` (nullopt when none
  // came). One thread reads faults.
  caf::expected<std::optional<fault>> next_fault(std::chrono::milliseconds timeout);
  bool placed(uint64_t pfn) const;
  uint64_t placed_count() const;

private:
  userfault_region(int fd, uint8_t* base, uint64_t pages);
  int fd_;
  uint8_t* base_;
  uint64_t pages_;
  std::vector<std::atomic<uint64_t>> placed_;
  std::atomic<uint64_t> placed_count_{0};
};

} // namespace ferry
