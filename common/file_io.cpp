#include "common/file_io.hpp"

#include "common/error.hpp"

#include <unistd.h>

#include <cerrno>
#include <string>

namespace ferry {

caf::expected<void> pread_full(int fd, uint8_t* p, size_t n, uint64_t at, const char* what) {
  while (n != 0) {
    const ssize_t r = ::pread(fd, p, n, static_cast<off_t>(at));
    if (r < 0 && errno == EINTR)
      continue;
    if (r < 0)
      return make_system_error(std::string{"reading "} + what);
    if (r == 0)
      return make_ferry_error(errc::invalid_argument, std::string{what} + " ends at byte " +
                                                        std::to_string(at) +
                                                        ", before what was to be read");
    p += r;
    n -= static_cast<size_t>(r);
    at += static_cast<uint64_t>(r);
  }
  return {};
}

caf::expected<void> pwrite_full(int fd, const uint8_t* p, size_t n, uint64_t at, const char* what) {
  while (n != 0) {
    const ssize_t w = ::pwrite(fd, p, n, static_cast<off_t>(at));
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0)
      return make_system_error(std::string{"writing "} + what);
    p += w;
    n -= static_cast<size_t>(w);
    at += static_cast<uint64_t>(w);
  }
  return {};
}

} // namespace ferry
