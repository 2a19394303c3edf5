// libFuzzer: a qcow2 image is untrusted input (a file an operator was
// handed). The input is the image itself, in a memfd: opened read-only and
// writable, its disk read, each snapshot's VM state read (when small), and
// a snapshot taken, reverted to and deleted. Nothing may crash, hang or
// read outside the file; every refusal is an error value.

#include "agent/block/qcow2_image.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <vector>

namespace qcow2 = ferry::qcow2;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const int fd = ::memfd_create("fuzz-qcow2", MFD_CLOEXEC);
  if (fd < 0)
    return 0;
  if (::write(fd, data, size) != static_cast<ssize_t>(size)) {
    ::close(fd);
    return 0;
  }
  if (auto ro = qcow2::image::open_fd(fd, false)) {
    std::vector<uint8_t> buf(std::min<uint64_t>((*ro)->size(), 64 * 1024));
    (void) (*ro)->read(0, buf);
    const int out = ::memfd_create("fuzz-vmstate", MFD_CLOEXEC);
    for (const auto& s : (*ro)->snapshots())
      if (s.vm_state_size <= (1U << 20))
        (void) (*ro)->read_vmstate(s.name, out);
    ::close(out);
  }
  if (auto rw = qcow2::image::open_fd(fd, true)) {
    auto& img = **rw;
    if (img.create_snapshot("fuzz", -1, 0, 0)) {
      (void) img.revert_to("fuzz");
      (void) img.delete_snapshot("fuzz");
    }
    if (!img.snapshots().empty())
      (void) img.revert_to(img.snapshots().front().name);
  }
  ::close(fd);
  return 0;
}
