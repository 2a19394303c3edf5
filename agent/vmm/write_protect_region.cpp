#include "agent/vmm/write_protect_region.hpp"

#include "agent/vmm/userfaultfd_io.hpp"
#include "common/error.hpp"

#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#endif
// Linux 6.4's uapi value; bookworm's headers predate it.
#ifndef UFFD_FEATURE_WP_UNPOPULATED
#define UFFD_FEATURE_WP_UNPOPULATED (1 << 13)
#endif

namespace ferry {

caf::expected<std::unique_ptr<write_protect_region>> write_protect_region::create(uint8_t* base,
                                                                                  uint64_t pages) {
  if (pages == 0 || reinterpret_cast<uintptr_t>(base) % page_bytes != 0)
    return make_ferry_error(errc::invalid_argument,
                            "write-protect region: an empty or unaligned range");
  const int fd = open_userfaultfd();
  if (fd < 0)
    return make_system_error(errno == EPERM ? "userfaultfd is not allowed here (needs root, "
                                              "vm.unprivileged_userfaultfd=1 or /dev/userfaultfd)"
                                            : "userfaultfd");
  std::unique_ptr<write_protect_region> r{new write_protect_region(fd, base, pages)};
  // Ask what the kernel offers first: a feature it lacks fails the handshake.
  uffdio_api probe{};
  probe.api = UFFD_API;
  const int pfd = open_userfaultfd();
  if (pfd < 0 || ::ioctl(pfd, UFFDIO_API, &probe) != 0) {
    if (pfd >= 0)
      ::close(pfd);
    return make_system_error("userfaultfd: API handshake");
  }
  ::close(pfd);
  if ((probe.features & UFFD_FEATURE_PAGEFAULT_FLAG_WP) == 0)
    return make_ferry_error(errc::not_supported,
                            "this kernel has no userfaultfd write-protect faults (Linux 5.7+)");
  uffdio_api api{};
  api.api = UFFD_API;
  api.features = UFFD_FEATURE_PAGEFAULT_FLAG_WP;
  if ((probe.features & UFFD_FEATURE_WP_HUGETLBFS_SHMEM) != 0)
    api.features |= UFFD_FEATURE_WP_HUGETLBFS_SHMEM;
  const bool unpopulated = (probe.features & UFFD_FEATURE_WP_UNPOPULATED) != 0;
  if (unpopulated)
    api.features |= UFFD_FEATURE_WP_UNPOPULATED;
  if (::ioctl(fd, UFFDIO_API, &api) != 0)
    return make_system_error("userfaultfd: API handshake (write-protect)");
  // Without protection of empty entries, a page never touched would change
  // unseen: map every page for reading first (the zero page where empty).
  if (!unpopulated && ::madvise(base, pages * page_bytes, MADV_POPULATE_READ) != 0)
    return make_system_error("write-protect region: populating guest RAM");
  uffdio_register reg{};
  reg.range.start = reinterpret_cast<uintptr_t>(base);
  reg.range.len = pages * page_bytes;
  reg.mode = UFFDIO_REGISTER_MODE_WP;
  if (::ioctl(fd, UFFDIO_REGISTER, &reg) != 0)
    return make_system_error("userfaultfd: registering guest RAM for write-protect (a kernel "
                             "with write-protect faults for this kind of memory is needed)");
  if ((reg.ioctls & (uint64_t{1} << _UFFDIO_WRITEPROTECT)) == 0)
    return make_ferry_error(errc::not_supported,
                            "userfaultfd: this memory cannot be write-protected");
  return r;
}

write_protect_region::write_protect_region(int fd, uint8_t* base, uint64_t pages)
  : fd_(fd), base_(base), pages_(pages) {}

write_protect_region::~write_protect_region() {
  (void) release(0, pages_);
  uffdio_range range{reinterpret_cast<uintptr_t>(base_), pages_ * page_bytes};
  (void) ::ioctl(fd_, UFFDIO_UNREGISTER, &range);
  ::close(fd_);
}

caf::expected<void> write_protect_region::protect_all() {
  uffdio_writeprotect wp{};
  wp.range.start = reinterpret_cast<uintptr_t>(base_);
  wp.range.len = pages_ * page_bytes;
  wp.mode = UFFDIO_WRITEPROTECT_MODE_WP;
  if (::ioctl(fd_, UFFDIO_WRITEPROTECT, &wp) != 0)
    return make_system_error("userfaultfd: write-protecting guest RAM");
  return {};
}

caf::expected<void> write_protect_region::release(uint64_t pfn, uint64_t count) {
  if (pfn > pages_ || count > pages_ - pfn)
    return make_ferry_error(errc::invalid_argument, "write-protect region: pages outside it");
  uffdio_writeprotect wp{};
  wp.range.start = reinterpret_cast<uintptr_t>(base_) + pfn * page_bytes;
  wp.range.len = count * page_bytes;
  wp.mode = 0; // writable again, and the waiting writers woken
  while (::ioctl(fd_, UFFDIO_WRITEPROTECT, &wp) != 0)
    if (errno != EAGAIN)
      return make_system_error("userfaultfd: releasing pages");
  return {};
}

caf::expected<std::optional<uint64_t>>
write_protect_region::next_write(std::chrono::milliseconds timeout) {
  FERRY_TRY(f, read_uffd_fault(fd_, timeout));
  if (!f || (f->flags & UFFD_PAGEFAULT_FLAG_WP) == 0)
    return std::optional<uint64_t>{};
  const auto start = reinterpret_cast<uintptr_t>(base_);
  if (f->address < start || f->address >= start + pages_ * page_bytes)
    return make_ferry_error(errc::system_error, "userfaultfd: a fault outside the region");
  return std::optional<uint64_t>{(f->address - start) / page_bytes};
}

} // namespace ferry
