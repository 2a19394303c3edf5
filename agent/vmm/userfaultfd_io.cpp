#include "agent/vmm/userfaultfd_io.hpp"

#include "common/error.hpp"

#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>

namespace ferry {

int open_userfaultfd() {
  const int flags = O_CLOEXEC | O_NONBLOCK;
  int fd = static_cast<int>(::syscall(SYS_userfaultfd, flags));
  if (fd >= 0 || errno != EPERM)
    return fd;
  const int dev = ::open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
  if (dev < 0) {
    errno = EPERM;
    return -1;
  }
  fd = ::ioctl(dev, USERFAULTFD_IOC_NEW, flags);
  ::close(dev);
  return fd;
}

caf::expected<std::optional<uffd_fault>> read_uffd_fault(int fd,
                                                         std::chrono::milliseconds timeout) {
  pollfd p{fd, POLLIN, 0};
  const int n = ::poll(&p, 1, static_cast<int>(timeout.count()));
  if (n < 0 && errno != EINTR)
    return make_system_error("userfaultfd: waiting for a fault");
  if (n <= 0)
    return std::optional<uffd_fault>{};
  uffd_msg msg{};
  const ssize_t got = ::read(fd, &msg, sizeof msg);
  if (got < 0 && errno == EAGAIN) // another reader, or the fault resolved itself
    return std::optional<uffd_fault>{};
  if (got != static_cast<ssize_t>(sizeof msg))
    return make_system_error("userfaultfd: reading a fault");
  if (msg.event != UFFD_EVENT_PAGEFAULT)
    return std::optional<uffd_fault>{};
  return std::optional<uffd_fault>{uffd_fault{msg.arg.pagefault.address, msg.arg.pagefault.flags,
                                              static_cast<int>(msg.arg.pagefault.feat.ptid)}};
}

} // namespace ferry
