#include "agent/block/block_devices.hpp"

#include "common/error.hpp"
#include "common/file_io.hpp"
#include "common/unique_fd.hpp"

#include <fcntl.h>
#include <sys/stat.h>

#include <cstring>

namespace ferry {

namespace {

caf::error invalid(const std::string& desc) {
  return make_ferry_error(errc::invalid_argument, desc);
}

// QEMU's probe: a qcow2 file starts with its magic; anything else is raw.
caf::expected<std::string> probe(const std::string& path) {
  unique_fd fd{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
  if (!fd)
    return invalid("Could not open '" + path + "': " + std::strerror(errno));
  uint8_t magic[4] = {};
  const ssize_t n = ::pread(fd.get(), magic, sizeof magic, 0);
  return n == 4 && std::memcmp(magic, "QFI\xfb", 4) == 0 ? "qcow2" : "raw";
}

} // namespace

caf::expected<std::unique_ptr<block_devices>>
block_devices::open(const std::vector<block_device_spec>& specs) {
  auto b = std::make_unique<block_devices>();
  for (const auto& s : specs) {
    device d;
    d.spec = s;
    if (d.spec.format.empty()) {
      FERRY_TRY(f, probe(s.path));
      d.spec.format = f;
    }
    if (d.spec.format == "qcow2") {
      if (!s.read_only) {
        auto rw = qcow2::image::open(s.path, true);
        if (rw) {
          d.qcow2 = std::move(*rw);
        } else {
          d.read_only_why = describe(rw.error());
        }
      } else {
        d.read_only_why = "opened read-only";
      }
      if (!d.qcow2) {
        auto ro = qcow2::image::open(s.path, false);
        if (!ro)
          return invalid("'" + s.path + "': " + describe(ro.error()));
        d.qcow2 = std::move(*ro);
      }
    } else {
      struct stat st {};
      if (::stat(s.path.c_str(), &st) != 0)
        return invalid("Could not open '" + s.path + "': " + std::strerror(errno));
    }
    b->devices_.push_back(std::move(d));
  }
  return b;
}

caf::expected<std::vector<uint8_t>> block_devices::boot_sector() const {
  std::vector<uint8_t> sector(512);
  if (devices_.empty())
    return std::vector<uint8_t>{};
  const device& d = devices_.front();
  if (d.qcow2) {
    if (d.qcow2->size() < sector.size())
      return invalid("'" + d.spec.path + "' is shorter than one 512-byte sector");
    FERRY_TRY_VOID(d.qcow2->read(0, sector));
    return sector;
  }
  unique_fd fd{::open(d.spec.path.c_str(), O_RDONLY | O_CLOEXEC)};
  if (!fd)
    return invalid("Could not open '" + d.spec.path + "': " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0 || static_cast<uint64_t>(st.st_size) < sector.size())
    return invalid("'" + d.spec.path + "' is shorter than one 512-byte sector");
  FERRY_TRY_VOID(pread_full(fd.get(), sector.data(), sector.size(), 0, "the boot disk"));
  return sector;
}

block_devices::device* block_devices::find(const std::string& node_name) {
  for (auto& d : devices_)
    if (d.spec.node_name == node_name)
      return &d;
  return nullptr;
}

} // namespace ferry
