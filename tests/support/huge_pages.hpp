#pragma once
// Huge pages for a test. Machines differ: most reserve none (vm.nr_hugepages
// = 0). A test that needs some asks for them here; as root the reservation
// raises vm.nr_hugepages for the test's lifetime and gives them back after.
// Tests holding one are serialised by a lock file, so two of them never
// count the same free pages.

#include <cstdint>
#include <string>

namespace ferry::test {

class huge_page_reservation {
public:
  // At least `pages` free huge pages of the default size (2 MiB on x86).
  explicit huge_page_reservation(uint64_t pages);
  ~huge_page_reservation();
  huge_page_reservation(const huge_page_reservation&) = delete;
  huge_page_reservation& operator=(const huge_page_reservation&) = delete;

  // Empty when the pages are there; else why not (for GTEST_SKIP).
  const std::string& unavailable_reason() const { return reason_; }

private:
  int lock_fd_ = -1;
  int64_t restore_total_ = -1; // vm.nr_hugepages before the test raised it
  std::string reason_;
};

// HugePages_Free from /proc/meminfo (0 when it cannot be read).
uint64_t free_huge_pages();

} // namespace ferry::test
