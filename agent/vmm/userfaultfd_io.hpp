#pragma once
// The userfaultfd plumbing guest-RAM regions share: opening one (the
// syscall, or /dev/userfaultfd where a sysctl keeps the syscall from this
// user) and reading the next page fault with a deadline.

#include <caf/expected.hpp>

#include <chrono>
#include <cstdint>
#include <optional>

namespace ferry {

// A new non-blocking userfaultfd, or -1 with errno set.
int open_userfaultfd();

struct uffd_fault {
  uint64_t address = 0;
  uint64_t flags = 0; // UFFD_PAGEFAULT_FLAG_*
  int tid = 0;        // the waiting thread (0 where the kernel does not say)
};
// The next page fault on `fd` within `timeout`; nullopt when none came (or
// another reader took it, or it was another kind of event).
caf::expected<std::optional<uffd_fault>> read_uffd_fault(int fd, std::chrono::milliseconds timeout);

} // namespace ferry
