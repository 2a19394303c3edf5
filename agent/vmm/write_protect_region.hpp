#pragma once
// Guest RAM write-protected page by page (userfaultfd write-protect mode):
// after protect_all(), the first write to each page — by a vCPU, the
// -accel none dirtier or the agent — blocks the writer until that page is
// released. A background snapshot saves each page before its first write
// this way, so the file holds RAM exactly as it was when the snapshot
// began, while the guest runs on. Pages never touched are protected too
// (UFFD_FEATURE_WP_UNPOPULATED, or populated for reading first).
//
// Needs root (or vm.unprivileged_userfaultfd=1, or /dev/userfaultfd) and a
// kernel with write-protect faults for this memory (anonymous since 5.7,
// shared memory since 5.19); create() says which is missing.

#include <caf/expected.hpp>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>

namespace ferry {

class write_protect_region {
public:
  static constexpr size_t page_bytes = 4096;

  static caf::expected<std::unique_ptr<write_protect_region>> create(uint8_t* base, uint64_t pages);
  // Releases every page (waking any writer) and unregisters.
  ~write_protect_region();
  write_protect_region(const write_protect_region&) = delete;
  write_protect_region& operator=(const write_protect_region&) = delete;

  caf::expected<void> protect_all();
  // Pages [pfn, pfn + count) writable again; writers waiting on them go on.
  caf::expected<void> release(uint64_t pfn, uint64_t count);
  // The page of the next write that waits, within `timeout` (nullopt when
  // none came). One thread reads faults.
  caf::expected<std::optional<uint64_t>> next_write(std::chrono::milliseconds timeout);

private:
  write_protect_region(int fd, uint8_t* base, uint64_t pages);
  int fd_;
  uint8_t* base_;
  uint64_t pages_;
};

} // namespace ferry
