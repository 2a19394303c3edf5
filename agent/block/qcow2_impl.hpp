#pragma once
// Internal to agent/block: the qcow2 format's constants and byte helpers,
// and image::impl, shared by qcow2_image.cpp (the header, tables, reads,
// refcounts and allocation) and qcow2_snapshots.cpp (internal snapshots).

#include "agent/block/qcow2_image.hpp"
#include "common/error.hpp"
#include "common/unique_fd.hpp"

#include <cinttypes>
#include <cstdio>
#include <string>
#include <vector>

namespace ferry::qcow2 {

namespace detail {

constexpr uint32_t qcow2_magic = 0x514649fb; // "QFI\xfb"
// Host offsets in L1, L2 and refcount table entries: bits 9 to 55.
constexpr uint64_t offset_mask = 0x00fffffffffffe00ULL;
constexpr uint64_t flag_copied = 1ULL << 63; // refcount is exactly 1
constexpr uint64_t flag_compressed = 1ULL << 62;
constexpr uint64_t flag_zero = 1; // v3: reads as zeros
// QEMU's own limits on what it will open; an image beyond them is refused.
constexpr uint64_t max_l1_bytes = 32U << 20;
constexpr uint64_t max_reftable_bytes = 8U << 20;
constexpr uint32_t max_snapshots = 65536;
constexpr uint64_t max_snapshot_table = 64U << 20;
constexpr uint32_t max_snapshot_extra = 1024;
constexpr uint32_t snapshot_fixed_size = 40;
constexpr uint32_t snapshot_extra_size = 24; // vm-state size, disk size, icount
// Incompatible feature bits (v3).
constexpr uint64_t incompat_dirty = 1;
constexpr uint64_t incompat_corrupt = 2;
constexpr uint64_t incompat_data_file = 4;
constexpr uint64_t incompat_compression = 8;
constexpr uint64_t incompat_extended_l2 = 16;
constexpr uint64_t incompat_known = 31;
// Header fields written in place.
constexpr uint64_t at_nb_snapshots = 60;
constexpr uint64_t at_autoclear = 88;

inline uint16_t be16(const uint8_t* p) {
  return static_cast<uint16_t>(p[0] << 8 | p[1]);
}
inline uint32_t be32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) << 24 | static_cast<uint32_t>(p[1]) << 16 |
         static_cast<uint32_t>(p[2]) << 8 | p[3];
}
inline uint64_t be64(const uint8_t* p) {
  return static_cast<uint64_t>(be32(p)) << 32 | be32(p + 4);
}
inline void put16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v >> 8);
  p[1] = static_cast<uint8_t>(v);
}
inline void put32(uint8_t* p, uint32_t v) {
  put16(p, static_cast<uint16_t>(v >> 16));
  put16(p + 2, static_cast<uint16_t>(v));
}
inline void put64(uint8_t* p, uint64_t v) {
  put32(p, static_cast<uint32_t>(v >> 32));
  put32(p + 4, static_cast<uint32_t>(v));
}

inline caf::error bad(const std::string& what) {
  return make_ferry_error(errc::bad_image, "qcow2 image: " + what);
}

inline std::string hex(uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "0x%" PRIx64, v);
  return buf;
}

struct snapshot_entry {
  snapshot_info info;
  uint64_t l1_offset = 0;
  uint32_t l1_size = 0;
  std::vector<uint8_t> extra; // kept as found when the table is rewritten
};

} // namespace detail

using namespace detail;

struct image::impl {
  unique_fd owned;
  int fd = -1;
  bool writable = false;
  uint32_t version = 0;
  uint32_t cluster_bits = 0;
  uint64_t cs = 0; // cluster size
  uint64_t disk_size = 0;
  uint64_t file_size = 0; // grows as clusters are allocated
  uint64_t l1_offset = 0;
  std::vector<uint64_t> l1;
  uint64_t reftable_offset = 0;
  std::vector<uint64_t> reftable;
  uint32_t refcount_order = 4;
  uint64_t snapshots_offset = 0;
  uint64_t autoclear = 0;
  std::vector<snapshot_entry> snaps;
  std::vector<snapshot_info> infos;

  uint64_t l2_entries() const { return cs / 8; }
  uint64_t l1_span() const { return cs * l2_entries(); }
  uint64_t disk_l1_entries() const { return (disk_size + l1_span() - 1) / l1_span(); }
  uint64_t align_up(uint64_t v) const { return (v + cs - 1) / cs * cs; }
  // Refcount entries per refcount block (16-bit entries when writing).
  uint32_t refblock_bits() const { return cluster_bits + 3 - refcount_order; }

  caf::expected<void> parse_header();
  caf::expected<void> load_snapshots();
  caf::expected<std::vector<uint64_t>> read_table(uint64_t off, uint64_t entries,
                                                  const std::string& what) const;
  caf::expected<void> write_table(uint64_t off, const std::vector<uint64_t>& t);
  caf::expected<void> check_cluster(uint64_t off, const std::string& what) const;
  caf::expected<uint64_t> l2_of(uint64_t l1_entry) const;
  caf::expected<uint64_t> host_cluster(const std::vector<uint64_t>& table, uint64_t guest) const;
  caf::expected<void> read_via(const std::vector<uint64_t>& table, uint64_t guest,
                               std::span<uint8_t> out) const;
  caf::expected<void> scan_tree(const std::vector<uint64_t>& table, size_t from, size_t to) const;

  caf::expected<uint16_t> refcount(uint64_t host) const;
  caf::expected<void> set_refcount(uint64_t host, uint16_t v);
  caf::expected<void> add_refcount(uint64_t host, int delta);
  caf::expected<uint64_t> alloc_clusters(uint64_t n);
  caf::expected<void> free_clusters(uint64_t off, uint64_t bytes);
  caf::expected<void> reference_tree(const std::vector<uint64_t>& table, size_t from, size_t to,
                                     int delta);
  caf::expected<void> fix_copied_flags();
  caf::expected<void> write_snapshot_table(std::vector<snapshot_entry> next);
  caf::expected<void> sync();
  const snapshot_entry* find(const std::string& tag) const;
  caf::expected<void> need_writable() const;
};

} // namespace ferry::qcow2
