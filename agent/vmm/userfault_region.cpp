#include "agent/vmm/userfault_region.hpp"

#include "agent/vmm/userfaultfd_io.hpp"
#include "common/error.hpp"

#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cerrno>
#include <string>

namespace ferry {

caf::expected<std::unique_ptr<userfault_region>> userfault_region::create(uint8_t* base,
                                                                          uint64_t pages) {
  if (pages == 0 || reinterpret_cast<uintptr_t>(base) % page_bytes != 0)
    return make_ferry_error(errc::invalid_argument,
                            "userfault region: an empty or unaligned range");
  const int fd = open_userfaultfd();
  if (fd < 0)
    return make_system_error(errno == EPERM ? "userfaultfd is not allowed here (needs root, "
                                              "vm.unprivileged_userfaultfd=1 or /dev/userfaultfd)"
                                            : "userfaultfd");
  std::unique_ptr<userfault_region> r{new userfault_region(fd, base, pages)};
  uffdio_api api{};
  api.api = UFFD_API;
  // The faulting thread's id tells postcopy's blocktime which vCPU waits.
  api.features = UFFD_FEATURE_MISSING_SHMEM | UFFD_FEATURE_THREAD_ID;
  if (::ioctl(fd, UFFDIO_API, &api) != 0)
    return make_system_error("userfaultfd: API handshake (shared-memory missing faults)");
  uffdio_register reg{};
  reg.range.start = reinterpret_cast<uintptr_t>(base);
  reg.range.len = pages * page_bytes;
  reg.mode = UFFDIO_REGISTER_MODE_MISSING;
  if (::ioctl(fd, UFFDIO_REGISTER, &reg) != 0)
    return make_system_error("userfaultfd: registering guest RAM");
  if ((reg.ioctls & (uint64_t{1} << _UFFDIO_COPY)) == 0)
    return make_ferry_error(errc::system_error,
                            "userfaultfd: this memory cannot take pages by UFFDIO_COPY");
  return r;
}

userfault_region::userfault_region(int fd, uint8_t* base, uint64_t pages)
  : fd_(fd), base_(base), pages_(pages), placed_((pages + 63) / 64) {}

// Unregistering wakes every thread still waiting: it faults again and finds
// an ordinary (absent, so zero-filled) page.
userfault_region::~userfault_region() {
  uffdio_range range{reinterpret_cast<uintptr_t>(base_), pages_ * page_bytes};
  (void) ::ioctl(fd_, UFFDIO_UNREGISTER, &range);
  ::close(fd_);
}

caf::expected<bool> userfault_region::place_run(uint64_t pfn, const uint8_t* data, uint64_t count) {
  if (count == 0 || pfn >= pages_ || count > pages_ - pfn)
    return make_ferry_error(errc::invalid_argument,
                            "userfault region: pages " + std::to_string(pfn) + ".." +
                              std::to_string(pfn + count) + " are outside RAM (" +
                              std::to_string(pages_) + " pages)");
  uint64_t done = 0; // pages placed
  bool duplicate = false;
  while (done < count) {
    uffdio_copy copy{};
    copy.dst = reinterpret_cast<uintptr_t>(base_ + (pfn + done) * page_bytes);
    copy.src = reinterpret_cast<uintptr_t>(data + done * page_bytes);
    copy.len = (count - done) * page_bytes;
    if (::ioctl(fd_, UFFDIO_COPY, &copy) == 0) {
      done = count;
      break;
    }
    const int err = errno;
    // A partial copy reports how far it got; EAGAIN (the address space
    // changed under it) is tried again from there.
    if (copy.copy > 0)
      done += static_cast<uint64_t>(copy.copy) / page_bytes;
    if (err == EEXIST) {
      duplicate = true;
      break;
    }
    if (err != EAGAIN)
      return make_system_error("userfaultfd: placing page " + std::to_string(pfn + done));
  }
  for (uint64_t p = pfn; p < pfn + done; ++p) {
    const uint64_t bit = uint64_t{1} << (p % 64);
    if ((placed_[p / 64].fetch_or(bit, std::memory_order_relaxed) & bit) == 0)
      placed_count_.fetch_add(1, std::memory_order_relaxed);
  }
  return !duplicate;
}

caf::expected<std::optional<userfault_region::fault>>
userfault_region::next_fault(std::chrono::milliseconds timeout) {
  FERRY_TRY(f, read_uffd_fault(fd_, timeout));
  if (!f)
    return std::optional<fault>{};
  const auto start = reinterpret_cast<uintptr_t>(base_);
  if (f->address < start || f->address >= start + pages_ * page_bytes)
    return make_ferry_error(errc::system_error, "userfaultfd: a fault outside the region");
  return std::optional<fault>{fault{(f->address - start) / page_bytes, f->tid}};
}

bool userfault_region::placed(uint64_t pfn) const {
  return pfn < pages_ &&
         ((placed_[pfn / 64].load(std::memory_order_relaxed) >> (pfn % 64)) & 1U) != 0;
}

uint64_t userfault_region::placed_count() const {
  return placed_count_.load(std::memory_order_relaxed);
}

} // namespace ferry
