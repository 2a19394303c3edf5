#pragma once
// A qcow2 image (versions 2 and 3) read and written by Ferry itself: the
// active layer's clusters through L1/L2 tables, and internal snapshots —
// each a copy of the L1 table plus, for a VM snapshot, the guest's state
// stored past the end of the disk, where QEMU keeps it, so `qemu-img
// snapshot -l` lists it and `qemu-img check` finds the image consistent.
//
// The image is untrusted input: every table offset and size is checked
// against the file before use. Refused with a clear error: encryption,
// backing files, external data files, extended L2 entries, compressed
// clusters (when read), and — for writing — a dirty or corrupt image or
// refcounts other than 16 bits wide.
//
// Not thread-safe: one owner at a time (a snapshot job holds it).

#include <caf/expected.hpp>

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace ferry::qcow2 {

struct snapshot_info {
  std::string id;   // QEMU's numeric id, as text
  std::string name; // the tag
  uint64_t vm_state_size = 0;
  uint64_t disk_size = 0; // the disk's size when taken (0: not recorded)
  uint32_t date_sec = 0;
  uint32_t date_nsec = 0;
  uint64_t vm_clock_nsec = 0;
};

class image {
public:
  // Opens and validates the header, the active L1 table, the refcount table
  // and the snapshot table.
  static caf::expected<std::unique_ptr<image>> open(const std::string& path, bool writable);
  // The same on a descriptor the image does not own (the fuzz target's memfd).
  static caf::expected<std::unique_ptr<image>> open_fd(int fd, bool writable);
  ~image();
  image(const image&) = delete;
  image& operator=(const image&) = delete;

  uint64_t size() const; // the virtual disk's size in bytes
  uint32_t cluster_size() const;
  const std::vector<snapshot_info>& snapshots() const;
  const snapshot_info* find_snapshot(const std::string& tag) const;

  // Disk bytes of the active layer (unallocated and zero clusters read as 0).
  caf::expected<void> read(uint64_t offset, std::span<uint8_t> out) const;

  // A new snapshot `tag` of the disk as it is, holding `vmstate_size` bytes
  // of VM state read from `vmstate_fd` at offset 0.
  caf::expected<void> create_snapshot(const std::string& tag, int vmstate_fd, uint64_t vmstate_size,
                                      uint64_t vm_clock_nsec);
  // The VM state of snapshot `tag`, written to `out_fd` from offset 0.
  caf::expected<void> read_vmstate(const std::string& tag, int out_fd) const;
  // The disk goes back to snapshot `tag` (QEMU's snapshot goto).
  caf::expected<void> revert_to(const std::string& tag);
  caf::expected<void> delete_snapshot(const std::string& tag);

  struct impl;

private:
  explicit image(std::unique_ptr<impl> p);
  std::unique_ptr<impl> impl_;
};

} // namespace ferry::qcow2
