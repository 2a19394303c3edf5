#include "tools/testguest/pattern_file.hpp"

#include "agent/testguest/pattern.hpp"
#include "common/error.hpp"
#include "common/unique_fd.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <vector>

namespace ferry::testguest {

caf::expected<void> write_pattern_file(const std::string& path, uint64_t size,
                                       const guest_params& p, std::span<const uint8_t> image) {
  if (auto ok = p.validate(); !ok)
    return ok;
  unique_fd fd{::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)};
  if (!fd)
    return make_system_error("cannot create '" + path + "'");
  if (::ftruncate(fd.get(), static_cast<off_t>(size)) != 0)
    return make_system_error("ftruncate(" + path + ")");
  auto write_at = [&](const uint8_t* data, size_t len, uint64_t off) -> caf::expected<void> {
    while (len > 0) {
      const ssize_t n = ::pwrite(fd.get(), data, len, static_cast<off_t>(off));
      if (n <= 0)
        return make_system_error("pwrite(" + path + ")");
      data += n;
      len -= static_cast<size_t>(n);
      off += static_cast<uint64_t>(n);
    }
    return {};
  };
  if (!image.empty() && boot_address + image.size() <= size)
    if (auto ok = write_at(image.data(), image.size(), boot_address); !ok)
      return ok;
  // Runs of non-zero pages are written in chunks; zero-class pages stay holes.
  constexpr uint64_t chunk_pages = 3;
  std::vector<uint8_t> buf(chunk_pages * page_bytes);
  const uint64_t end = std::min<uint64_t>(p.ram_top, size);
  uint64_t addr = p.pattern_start;
  while (addr + page_bytes <= end) {
    const uint64_t page = addr / page_bytes;
    if (is_zero_class(page)) {
      addr += page_bytes;
      continue;
    }
    uint64_t n = 0;
    while (n < chunk_pages && addr + (n + 1) * page_bytes <= end && !is_zero_class(page + n)) {
      fill_page(buf.data() + n * page_bytes, page + n, p.seed);
      ++n;
    }
    if (auto ok = write_at(buf.data(), n * page_bytes, addr); !ok)
      return ok;
    addr += n * page_bytes;
  }
  return {};
}

} // namespace ferry::testguest
