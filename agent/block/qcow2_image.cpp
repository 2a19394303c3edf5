#include "agent/block/qcow2_image.hpp"

#include "common/error.hpp"
#include "common/file_io.hpp"
#include "common/unique_fd.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <ctime>

namespace ferry::qcow2 {

namespace {

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

uint16_t be16(const uint8_t* p) {
  return static_cast<uint16_t>(p[0] << 8 | p[1]);
}
uint32_t be32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) << 24 | static_cast<uint32_t>(p[1]) << 16 |
         static_cast<uint32_t>(p[2]) << 8 | p[3];
}
uint64_t be64(const uint8_t* p) {
  return static_cast<uint64_t>(be32(p)) << 32 | be32(p + 4);
}
void put16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v >> 8);
  p[1] = static_cast<uint8_t>(v);
}
void put32(uint8_t* p, uint32_t v) {
  put16(p, static_cast<uint16_t>(v >> 16));
  put16(p + 2, static_cast<uint16_t>(v));
}
void put64(uint8_t* p, uint64_t v) {
  put32(p, static_cast<uint32_t>(v >> 32));
  put32(p + 4, static_cast<uint32_t>(v));
}

caf::error bad(const std::string& what) {
  return make_ferry_error(errc::bad_image, "qcow2 image: " + what);
}

std::string hex(uint64_t v) {
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

} // namespace

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

caf::expected<void> image::impl::parse_header() {
  struct stat st {};
  if (::fstat(fd, &st) != 0)
    return make_system_error("qcow2 image: fstat");
  file_size = static_cast<uint64_t>(st.st_size);
  uint8_t h[104] = {};
  if (file_size < 72)
    return bad("shorter than a header (" + std::to_string(file_size) + " bytes)");
  FERRY_TRY_VOID(pread_full(fd, h, std::min<uint64_t>(sizeof h, file_size), 0, "qcow2 header"));
  if (be32(h) != qcow2_magic)
    return bad("not a qcow2 file (bad magic)");
  version = be32(h + 4);
  if (version != 2 && version != 3)
    return bad("version " + std::to_string(version) + " is not supported (2 and 3 are)");
  if (be64(h + 8) != 0)
    return bad("backing files are not supported");
  cluster_bits = be32(h + 20);
  if (cluster_bits < 9 || cluster_bits > 21)
    return bad("cluster_bits " + std::to_string(cluster_bits) + " out of range (9..21)");
  cs = uint64_t{1} << cluster_bits;
  disk_size = be64(h + 24);
  if (be32(h + 32) != 0)
    return bad("encrypted images are not supported");
  const uint32_t l1_size = be32(h + 36);
  l1_offset = be64(h + 40);
  reftable_offset = be64(h + 48);
  const uint32_t reftable_clusters = be32(h + 56);
  const uint32_t nb_snapshots = be32(h + 60);
  snapshots_offset = be64(h + 64);
  if (version == 3) {
    if (file_size < 104)
      return bad("shorter than a version 3 header");
    const uint64_t incompat = be64(h + 72);
    autoclear = be64(h + 88);
    refcount_order = be32(h + 96);
    const uint32_t header_length = be32(h + 100);
    if (header_length < 104 || header_length > cs)
      return bad("header_length " + std::to_string(header_length) + " out of range");
    if ((incompat & ~incompat_known) != 0)
      return bad("unknown incompatible features " + hex(incompat & ~incompat_known));
    if ((incompat & incompat_data_file) != 0)
      return bad("external data files are not supported");
    if ((incompat & incompat_extended_l2) != 0)
      return bad("extended L2 entries are not supported");
    (void) incompat_compression; // only compressed clusters use it: refused when read
    if (writable && (incompat & incompat_dirty) != 0)
      return bad("marked dirty (lazy refcounts): run 'qemu-img check -r all' before writing");
    if (writable && (incompat & incompat_corrupt) != 0)
      return bad("marked corrupt: run 'qemu-img check -r all' before writing");
    if (refcount_order > 6)
      return bad("refcount_order " + std::to_string(refcount_order) + " out of range (0..6)");
  }
  if (writable && refcount_order != 4)
    return bad("only 16-bit refcounts can be written (refcount_bits=" +
               std::to_string(1U << refcount_order) + ")");
  if (disk_size / l1_span() > max_l1_bytes / 8)
    return bad("virtual size " + std::to_string(disk_size) + " too large");
  if (l1_size < disk_l1_entries())
    return bad("L1 table of " + std::to_string(l1_size) + " entries is too small for the disk");
  FERRY_TRY(active, read_table(l1_offset, l1_size, "the L1 table"));
  l1 = std::move(active);
  if (reftable_clusters == 0 || uint64_t{reftable_clusters} * cs > max_reftable_bytes)
    return bad("refcount table of " + std::to_string(reftable_clusters) + " clusters");
  FERRY_TRY(
    rt, read_table(reftable_offset, uint64_t{reftable_clusters} * cs / 8, "the refcount table"));
  reftable = std::move(rt);
  for (uint64_t& e : reftable) {
    e &= ~uint64_t{0x1ff}; // reserved bits
    if (e != 0)
      FERRY_TRY_VOID(check_cluster(e, "a refcount block"));
  }
  if (nb_snapshots > max_snapshots)
    return bad(std::to_string(nb_snapshots) + " snapshots (at most 65536)");
  snaps.resize(nb_snapshots);
  return load_snapshots();
}

caf::expected<void> image::impl::load_snapshots() {
  if (snaps.empty())
    return {};
  if (snapshots_offset % cs != 0 || snapshots_offset >= file_size)
    return bad("snapshot table at " + hex(snapshots_offset) + " outside the image");
  uint64_t at = snapshots_offset;
  const uint64_t end = std::min(file_size, snapshots_offset + max_snapshot_table);
  auto take = [&](uint8_t* p, uint64_t n) -> caf::expected<void> {
    if (n > end - at)
      return bad("snapshot table runs past the end of the image (or past 64 MiB)");
    FERRY_TRY_VOID(pread_full(fd, p, n, at, "qcow2 snapshot table"));
    at += n;
    return {};
  };
  for (size_t i = 0; i < snaps.size(); ++i) {
    uint8_t f[snapshot_fixed_size];
    FERRY_TRY_VOID(take(f, sizeof f));
    auto& s = snaps[i];
    s.l1_offset = be64(f);
    s.l1_size = be32(f + 8);
    const uint16_t id_size = be16(f + 12);
    const uint16_t name_size = be16(f + 14);
    s.info.date_sec = be32(f + 16);
    s.info.date_nsec = be32(f + 20);
    s.info.vm_clock_nsec = be64(f + 24);
    s.info.vm_state_size = be32(f + 32);
    const uint32_t extra_size = be32(f + 36);
    if (extra_size > max_snapshot_extra)
      return bad("snapshot " + std::to_string(i) + " has " + std::to_string(extra_size) +
                 " bytes of extra data (at most 1024)");
    s.extra.resize(extra_size);
    FERRY_TRY_VOID(take(s.extra.data(), extra_size));
    if (version == 3 && extra_size < 16)
      return bad("snapshot " + std::to_string(i) + " lacks the extra data version 3 requires");
    if (extra_size >= 8)
      s.info.vm_state_size = be64(s.extra.data());
    if (extra_size >= 16)
      s.info.disk_size = be64(s.extra.data() + 8);
    s.info.id.resize(id_size);
    FERRY_TRY_VOID(take(reinterpret_cast<uint8_t*>(s.info.id.data()), id_size));
    s.info.name.resize(name_size);
    FERRY_TRY_VOID(take(reinterpret_cast<uint8_t*>(s.info.name.data()), name_size));
    const uint64_t pad = (8 - (at - snapshots_offset) % 8) % 8;
    if (pad > end - at && i + 1 < snaps.size())
      return bad("snapshot table runs past the end of the image");
    at += std::min(pad, end - at);
    if (s.l1_offset % cs != 0 || uint64_t{s.l1_size} * 8 > max_l1_bytes ||
        s.l1_offset > file_size || uint64_t{s.l1_size} * 8 > file_size - s.l1_offset)
      return bad("snapshot '" + s.info.name + "' has its L1 table outside the image");
    infos.push_back(s.info);
  }
  return {};
}

caf::expected<std::vector<uint64_t>> image::impl::read_table(uint64_t off, uint64_t entries,
                                                             const std::string& what) const {
  if (entries * 8 > max_l1_bytes)
    return bad(what + " is too large");
  if (entries == 0)
    return std::vector<uint64_t>{};
  if (off % cs != 0 || off == 0 || off > file_size || entries * 8 > file_size - off)
    return bad(what + " at " + hex(off) + " lies outside the image");
  std::vector<uint8_t> raw(entries * 8);
  FERRY_TRY_VOID(pread_full(fd, raw.data(), raw.size(), off, "qcow2 table"));
  std::vector<uint64_t> t(entries);
  for (uint64_t i = 0; i < entries; ++i)
    t[i] = be64(raw.data() + i * 8);
  return t;
}

caf::expected<void> image::impl::write_table(uint64_t off, const std::vector<uint64_t>& t) {
  std::vector<uint8_t> raw(t.size() * 8);
  for (size_t i = 0; i < t.size(); ++i)
    put64(raw.data() + i * 8, t[i]);
  return pwrite_full(fd, raw.data(), raw.size(), off, "qcow2 table");
}

caf::expected<void> image::impl::check_cluster(uint64_t off, const std::string& what) const {
  if (off % cs != 0 || off == 0 || off > file_size || cs > file_size - off)
    return bad(what + " at " + hex(off) + " lies outside the image or is misaligned");
  return {};
}

caf::expected<uint64_t> image::impl::l2_of(uint64_t l1_entry) const {
  const uint64_t l2 = l1_entry & offset_mask;
  if (l2 != 0)
    FERRY_TRY_VOID(check_cluster(l2, "an L2 table"));
  return l2;
}

// The host cluster behind `guest` through `table` (an L1), 0 for a cluster
// that reads as zeros.
caf::expected<uint64_t> image::impl::host_cluster(const std::vector<uint64_t>& table,
                                                  uint64_t guest) const {
  const uint64_t i1 = guest / l1_span();
  if (i1 >= table.size())
    return uint64_t{0};
  FERRY_TRY(l2, l2_of(table[i1]));
  if (l2 == 0)
    return uint64_t{0};
  uint8_t raw[8];
  const uint64_t i2 = guest / cs % l2_entries();
  FERRY_TRY_VOID(pread_full(fd, raw, 8, l2 + i2 * 8, "qcow2 L2 table"));
  const uint64_t e = be64(raw);
  if ((e & flag_compressed) != 0)
    return bad("compressed clusters are not supported (guest offset " + hex(guest) + ")");
  if (version == 3 && (e & flag_zero) != 0)
    return uint64_t{0};
  const uint64_t host = e & offset_mask;
  if (host != 0)
    FERRY_TRY_VOID(check_cluster(host, "a data cluster"));
  return host;
}

caf::expected<void> image::impl::read_via(const std::vector<uint64_t>& table, uint64_t guest,
                                          std::span<uint8_t> out) const {
  while (!out.empty()) {
    const uint64_t in = guest % cs;
    const size_t n = static_cast<size_t>(std::min<uint64_t>(cs - in, out.size()));
    FERRY_TRY(host, host_cluster(table, guest));
    if (host == 0)
      std::memset(out.data(), 0, n);
    else
      FERRY_TRY_VOID(pread_full(fd, out.data(), n, host + in, "qcow2 data cluster"));
    out = out.subspan(n);
    guest += n;
  }
  return {};
}

// Every L2 table and data cluster `table[from, to)` reaches is inside the
// image and not compressed: checked before any refcount changes, so a bad
// table never leaves refcounts half updated.
caf::expected<void> image::impl::scan_tree(const std::vector<uint64_t>& table, size_t from,
                                           size_t to) const {
  for (size_t i = from; i < to && i < table.size(); ++i) {
    FERRY_TRY(l2_off, l2_of(table[i]));
    if (l2_off == 0)
      continue;
    FERRY_TRY(l2, read_table(l2_off, l2_entries(), "an L2 table"));
    for (uint64_t e : l2) {
      if ((e & flag_compressed) != 0)
        return bad("compressed clusters are not supported");
      if ((e & offset_mask) != 0)
        FERRY_TRY_VOID(check_cluster(e & offset_mask, "a data cluster"));
    }
  }
  return {};
}

caf::expected<uint16_t> image::impl::refcount(uint64_t host) const {
  const uint64_t idx = host / cs;
  const uint64_t block = idx >> refblock_bits();
  if (block >= reftable.size() || reftable[block] == 0)
    return uint16_t{0};
  uint8_t raw[2];
  const uint64_t in = idx & ((uint64_t{1} << refblock_bits()) - 1);
  FERRY_TRY_VOID(pread_full(fd, raw, 2, reftable[block] + in * 2, "qcow2 refcount block"));
  return be16(raw);
}

caf::expected<void> image::impl::set_refcount(uint64_t host, uint16_t v) {
  const uint64_t idx = host / cs;
  const uint64_t block = idx >> refblock_bits();
  if (block >= reftable.size() || reftable[block] == 0)
    return bad("no refcount block covers cluster " + hex(host));
  uint8_t raw[2];
  put16(raw, v);
  const uint64_t in = idx & ((uint64_t{1} << refblock_bits()) - 1);
  return pwrite_full(fd, raw, 2, reftable[block] + in * 2, "qcow2 refcount block");
}

caf::expected<void> image::impl::add_refcount(uint64_t host, int delta) {
  FERRY_TRY(r, refcount(host));
  const int64_t next = int64_t{r} + delta;
  if (next < 0 || next > 0xffff)
    return bad("refcount of cluster " + hex(host) + " out of range (" + std::to_string(r) + " by " +
               std::to_string(delta) + "): run 'qemu-img check'");
  return set_refcount(host, static_cast<uint16_t>(next));
}

// `n` contiguous new clusters at the end of the image, refcount 1 (their
// content is the caller's to write). A refcount block missing for them is
// made first, at the end of the file, counting itself.
caf::expected<uint64_t> image::impl::alloc_clusters(uint64_t n) {
  for (;;) {
    const uint64_t off = align_up(file_size);
    const uint64_t first = (off / cs) >> refblock_bits();
    const uint64_t last = ((off / cs) + n - 1) >> refblock_bits();
    bool made_block = false;
    for (uint64_t b = first; b <= last && !made_block; ++b) {
      if (b >= reftable.size())
        return bad("the refcount table is full (growing it is not supported)");
      if (reftable[b] != 0)
        continue;
      const uint64_t at = off; // (off / cs) >> bits == first == b here
      std::vector<uint8_t> zero(cs, 0);
      const uint64_t in = (at / cs) & ((uint64_t{1} << refblock_bits()) - 1);
      if (((at / cs) >> refblock_bits()) == b)
        put16(zero.data() + in * 2, 1);
      FERRY_TRY_VOID(pwrite_full(fd, zero.data(), zero.size(), at, "qcow2 refcount block"));
      file_size = at + cs;
      reftable[b] = at;
      uint8_t raw[8];
      put64(raw, at);
      FERRY_TRY_VOID(pwrite_full(fd, raw, 8, reftable_offset + b * 8, "qcow2 refcount table"));
      if (((at / cs) >> refblock_bits()) != b)
        FERRY_TRY_VOID(set_refcount(at, 1));
      made_block = true;
    }
    if (made_block)
      continue;
    for (uint64_t i = 0; i < n; ++i)
      FERRY_TRY_VOID(set_refcount(off + i * cs, 1));
    file_size = off + n * cs;
    if (::ftruncate(fd, static_cast<off_t>(file_size)) != 0)
      return make_system_error("qcow2 image: ftruncate");
    return off;
  }
}

caf::expected<void> image::impl::free_clusters(uint64_t off, uint64_t bytes) {
  for (uint64_t at = off; at < off + bytes; at += cs)
    FERRY_TRY_VOID(add_refcount(at, -1));
  return {};
}

// One more (or one fewer) L1 table refers to every L2 table in
// `table[from, to)` and every cluster those reach, as QEMU counts them.
caf::expected<void> image::impl::reference_tree(const std::vector<uint64_t>& table, size_t from,
                                                size_t to, int delta) {
  for (size_t i = from; i < to && i < table.size(); ++i) {
    FERRY_TRY(l2_off, l2_of(table[i]));
    if (l2_off == 0)
      continue;
    FERRY_TRY(l2, read_table(l2_off, l2_entries(), "an L2 table"));
    for (uint64_t e : l2)
      if ((e & offset_mask) != 0)
        FERRY_TRY_VOID(add_refcount(e & offset_mask, delta));
    FERRY_TRY_VOID(add_refcount(l2_off, delta));
  }
  return {};
}

// The active tables' COPIED flags say again exactly which clusters only
// they use (refcount 1): QEMU relies on them to write in place.
caf::expected<void> image::impl::fix_copied_flags() {
  bool l1_changed = false;
  for (uint64_t& entry : l1) {
    FERRY_TRY(l2_off, l2_of(entry));
    if (l2_off == 0)
      continue;
    FERRY_TRY(l2, read_table(l2_off, l2_entries(), "an L2 table"));
    bool l2_changed = false;
    for (uint64_t& e : l2) {
      const uint64_t host = e & offset_mask;
      if (host == 0)
        continue;
      FERRY_TRY(r, refcount(host));
      const uint64_t want = r == 1 ? (e | flag_copied) : (e & ~flag_copied);
      l2_changed = l2_changed || want != e;
      e = want;
    }
    if (l2_changed)
      FERRY_TRY_VOID(write_table(l2_off, l2));
    FERRY_TRY(r, refcount(l2_off));
    const uint64_t want = r == 1 ? (entry | flag_copied) : (entry & ~flag_copied);
    l1_changed = l1_changed || want != entry;
    entry = want;
  }
  if (l1_changed)
    FERRY_TRY_VOID(write_table(l1_offset, l1));
  return {};
}

caf::expected<void> image::impl::sync() {
  if (::fdatasync(fd) != 0)
    return make_system_error("qcow2 image: fdatasync");
  return {};
}

// The snapshot table rewritten as `next` in new clusters; the header points
// at it in one write; then the old table's clusters are freed (a crash in
// between leaks clusters, never loses a table).
caf::expected<void> image::impl::write_snapshot_table(std::vector<snapshot_entry> next) {
  std::vector<uint8_t> raw;
  for (const auto& s : next) {
    const size_t at = raw.size();
    raw.resize(at + snapshot_fixed_size);
    uint8_t* f = raw.data() + at;
    put64(f, s.l1_offset);
    put32(f + 8, s.l1_size);
    put16(f + 12, static_cast<uint16_t>(s.info.id.size()));
    put16(f + 14, static_cast<uint16_t>(s.info.name.size()));
    put32(f + 16, s.info.date_sec);
    put32(f + 20, s.info.date_nsec);
    put64(f + 24, s.info.vm_clock_nsec);
    put32(f + 32, static_cast<uint32_t>(std::min<uint64_t>(s.info.vm_state_size, UINT32_MAX)));
    put32(f + 36, static_cast<uint32_t>(s.extra.size()));
    raw.insert(raw.end(), s.extra.begin(), s.extra.end());
    raw.insert(raw.end(), s.info.id.begin(), s.info.id.end());
    raw.insert(raw.end(), s.info.name.begin(), s.info.name.end());
    raw.resize((raw.size() + 7) / 8 * 8, 0);
  }
  if (raw.size() > max_snapshot_table)
    return bad("the snapshot table would exceed 64 MiB");
  uint64_t table = 0;
  if (!raw.empty()) {
    FERRY_TRY(off, alloc_clusters(align_up(raw.size()) / cs));
    table = off;
    raw.resize(align_up(raw.size()), 0);
    FERRY_TRY_VOID(pwrite_full(fd, raw.data(), raw.size(), table, "qcow2 snapshot table"));
  }
  FERRY_TRY_VOID(sync());
  uint8_t h[12];
  put32(h, static_cast<uint32_t>(next.size()));
  put64(h + 4, table);
  FERRY_TRY_VOID(pwrite_full(fd, h, sizeof h, at_nb_snapshots, "qcow2 header"));
  if (version == 3 && autoclear != 0) {
    // Features Ferry does not keep up to date (persistent bitmaps) are
    // declared stale, as QEMU does for an image written by someone unaware.
    uint8_t zero[8] = {};
    FERRY_TRY_VOID(pwrite_full(fd, zero, sizeof zero, at_autoclear, "qcow2 header"));
    autoclear = 0;
  }
  FERRY_TRY_VOID(sync());
  const uint64_t old = snapshots_offset;
  uint64_t old_bytes = 0;
  for (const auto& s : snaps)
    old_bytes = (old_bytes + snapshot_fixed_size + s.extra.size() + s.info.id.size() +
                 s.info.name.size() + 7) /
                8 * 8;
  snapshots_offset = table;
  snaps = std::move(next);
  infos.clear();
  for (const auto& s : snaps)
    infos.push_back(s.info);
  if (old != 0 && old_bytes != 0)
    FERRY_TRY_VOID(free_clusters(old, align_up(old_bytes)));
  return {};
}

const snapshot_entry* image::impl::find(const std::string& tag) const {
  for (const auto& s : snaps)
    if (s.info.name == tag)
      return &s;
  return nullptr;
}

caf::expected<void> image::impl::need_writable() const {
  if (!writable)
    return bad("opened read-only");
  return {};
}

image::image(std::unique_ptr<impl> p) : impl_(std::move(p)) {}
image::~image() = default;

caf::expected<std::unique_ptr<image>> image::open(const std::string& path, bool writable) {
  unique_fd fd{::open(path.c_str(), (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC)};
  if (!fd)
    return make_system_error("cannot open '" + path + "'");
  FERRY_TRY(img, open_fd(fd.get(), writable));
  img->impl_->owned = std::move(fd);
  return img;
}

caf::expected<std::unique_ptr<image>> image::open_fd(int fd, bool writable) {
  auto p = std::make_unique<impl>();
  p->fd = fd;
  p->writable = writable;
  FERRY_TRY_VOID(p->parse_header());
  return std::unique_ptr<image>{new image(std::move(p))};
}

uint64_t image::size() const {
  return impl_->disk_size;
}
uint32_t image::cluster_size() const {
  return static_cast<uint32_t>(impl_->cs);
}
const std::vector<snapshot_info>& image::snapshots() const {
  return impl_->infos;
}

const snapshot_info* image::find_snapshot(const std::string& tag) const {
  const auto* s = impl_->find(tag);
  return s != nullptr ? &s->info : nullptr;
}

caf::expected<void> image::read(uint64_t offset, std::span<uint8_t> out) const {
  if (offset > impl_->disk_size || out.size() > impl_->disk_size - offset)
    return bad("read past the end of the disk");
  return impl_->read_via(impl_->l1, offset, out);
}

caf::expected<void> image::create_snapshot(const std::string& tag, int vmstate_fd,
                                           uint64_t vmstate_size, uint64_t vm_clock_nsec) {
  auto& m = *impl_;
  FERRY_TRY_VOID(m.need_writable());
  if (tag.empty() || tag.size() > 0xffff)
    return make_ferry_error(errc::invalid_argument, "a snapshot tag of 1 to 65535 bytes is needed");
  if (m.find(tag) != nullptr)
    return make_ferry_error(errc::invalid_argument, "Snapshot '" + tag + "' already exists");
  if (m.snaps.size() >= max_snapshots)
    return bad("already holds 65536 snapshots");
  FERRY_TRY_VOID(m.scan_tree(m.l1, 0, m.l1.size()));

  // The VM state past the disk's end (QEMU's place for it), in clusters only
  // the snapshot refers to.
  const uint64_t vm_first = m.disk_l1_entries();
  const uint64_t vm_clusters = (vmstate_size + m.cs - 1) / m.cs;
  const uint64_t vm_l2s = (vm_clusters + m.l2_entries() - 1) / m.l2_entries();
  if ((vm_first + vm_l2s) * 8 > max_l1_bytes)
    return bad("the VM state is too large for one snapshot");
  std::vector<uint64_t> snap_l1(std::max<uint64_t>(m.l1.size(), vm_first + vm_l2s), 0);
  for (size_t i = 0; i < m.l1.size(); ++i)
    snap_l1[i] = m.l1[i] & ~flag_copied;
  for (size_t i = vm_first; i < m.l1.size(); ++i)
    snap_l1[i] = 0; // the active layer never holds VM state Ferry reads
  std::vector<uint8_t> buf;
  uint64_t copied = 0;
  for (uint64_t t = 0; t < vm_l2s; ++t) {
    const uint64_t n = std::min<uint64_t>(m.l2_entries(), vm_clusters - t * m.l2_entries());
    FERRY_TRY(l2_off, m.alloc_clusters(1 + n));
    std::vector<uint64_t> l2(m.l2_entries(), 0);
    for (uint64_t c = 0; c < n; ++c) {
      const uint64_t host = l2_off + (1 + c) * m.cs;
      l2[c] = host | flag_copied;
      const uint64_t len = std::min<uint64_t>(m.cs, vmstate_size - copied);
      buf.assign(m.cs, 0);
      FERRY_TRY_VOID(pread_full(vmstate_fd, buf.data(), len, copied, "the VM state"));
      FERRY_TRY_VOID(pwrite_full(m.fd, buf.data(), buf.size(), host, "qcow2 VM state"));
      copied += len;
    }
    FERRY_TRY_VOID(m.write_table(l2_off, l2));
    snap_l1[vm_first + t] = l2_off | flag_copied;
  }
  const uint64_t l1_bytes = m.align_up(std::max<uint64_t>(snap_l1.size() * 8, 1));
  FERRY_TRY(snap_l1_off, m.alloc_clusters(l1_bytes / m.cs));
  FERRY_TRY_VOID(m.write_table(snap_l1_off, snap_l1));
  // The disk's clusters are shared from here: one more reference each, and
  // the active layer's COPIED flags cleared.
  FERRY_TRY_VOID(m.reference_tree(m.l1, 0, std::min<size_t>(vm_first, m.l1.size()), +1));
  FERRY_TRY_VOID(m.fix_copied_flags());

  snapshot_entry e;
  uint64_t next_id = 0;
  for (const auto& s : m.snaps)
    next_id = std::max<uint64_t>(next_id, std::strtoull(s.info.id.c_str(), nullptr, 10));
  e.info.id = std::to_string(next_id + 1);
  e.info.name = tag;
  e.info.vm_state_size = vmstate_size;
  e.info.disk_size = m.disk_size;
  timespec now{};
  ::clock_gettime(CLOCK_REALTIME, &now);
  e.info.date_sec = static_cast<uint32_t>(now.tv_sec);
  e.info.date_nsec = static_cast<uint32_t>(now.tv_nsec);
  e.info.vm_clock_nsec = vm_clock_nsec;
  e.l1_offset = snap_l1_off;
  e.l1_size = static_cast<uint32_t>(snap_l1.size());
  e.extra.resize(snapshot_extra_size);
  put64(e.extra.data(), vmstate_size);
  put64(e.extra.data() + 8, m.disk_size);
  put64(e.extra.data() + 16, UINT64_MAX); // icount: not recorded
  auto next = m.snaps;
  next.push_back(std::move(e));
  return m.write_snapshot_table(std::move(next));
}

caf::expected<void> image::read_vmstate(const std::string& tag, int out_fd) const {
  const auto& m = *impl_;
  const auto* s = m.find(tag);
  if (s == nullptr)
    return make_ferry_error(errc::invalid_argument, "Snapshot '" + tag + "' does not exist");
  FERRY_TRY(table, m.read_table(s->l1_offset, s->l1_size, "a snapshot's L1 table"));
  const uint64_t base = m.disk_l1_entries() * m.l1_span();
  const uint64_t covered =
    table.size() > m.disk_l1_entries() ? (table.size() - m.disk_l1_entries()) * m.l1_span() : 0;
  if (s->info.vm_state_size > covered)
    return bad("snapshot '" + tag + "' claims more VM state than its L1 table covers");
  std::vector<uint8_t> buf(m.cs);
  for (uint64_t at = 0; at < s->info.vm_state_size; at += m.cs) {
    const uint64_t n = std::min<uint64_t>(m.cs, s->info.vm_state_size - at);
    FERRY_TRY_VOID(m.read_via(table, base + at, {buf.data(), n}));
    FERRY_TRY_VOID(pwrite_full(out_fd, buf.data(), n, at, "the VM state"));
  }
  return {};
}

caf::expected<void> image::revert_to(const std::string& tag) {
  auto& m = *impl_;
  FERRY_TRY_VOID(m.need_writable());
  const auto* s = m.find(tag);
  if (s == nullptr)
    return make_ferry_error(errc::invalid_argument, "Snapshot '" + tag + "' does not exist");
  if (s->info.disk_size != 0 && s->info.disk_size != m.disk_size)
    return bad("snapshot '" + tag + "' was taken of a disk of another size");
  FERRY_TRY(table, m.read_table(s->l1_offset, s->l1_size, "a snapshot's L1 table"));
  const size_t disk = std::min<size_t>(m.disk_l1_entries(), m.l1.size());
  FERRY_TRY_VOID(m.scan_tree(table, 0, disk));
  FERRY_TRY_VOID(m.scan_tree(m.l1, 0, disk));
  std::vector<uint64_t> old(m.l1.begin(), m.l1.begin() + static_cast<ptrdiff_t>(disk));
  std::vector<uint64_t> next = m.l1;
  for (size_t i = 0; i < disk; ++i)
    next[i] = i < table.size() ? (table[i] & ~flag_copied) : 0;
  // References first, then the table, then the old references dropped: a
  // crash leaks clusters at worst.
  FERRY_TRY_VOID(m.reference_tree(next, 0, disk, +1));
  FERRY_TRY_VOID(m.write_table(m.l1_offset, next));
  FERRY_TRY_VOID(m.sync());
  m.l1 = std::move(next);
  FERRY_TRY_VOID(m.reference_tree(old, 0, old.size(), -1));
  FERRY_TRY_VOID(m.fix_copied_flags());
  return m.sync();
}

caf::expected<void> image::delete_snapshot(const std::string& tag) {
  auto& m = *impl_;
  FERRY_TRY_VOID(m.need_writable());
  const auto* s = m.find(tag);
  if (s == nullptr)
    return make_ferry_error(errc::invalid_argument, "Snapshot '" + tag + "' does not exist");
  const snapshot_entry gone = *s;
  FERRY_TRY(table, m.read_table(gone.l1_offset, gone.l1_size, "a snapshot's L1 table"));
  FERRY_TRY_VOID(m.scan_tree(table, 0, table.size()));
  std::vector<snapshot_entry> next;
  for (const auto& e : m.snaps)
    if (e.info.name != tag)
      next.push_back(e);
  FERRY_TRY_VOID(m.write_snapshot_table(std::move(next)));
  FERRY_TRY_VOID(m.reference_tree(table, 0, table.size(), -1));
  FERRY_TRY_VOID(m.free_clusters(gone.l1_offset, m.align_up(uint64_t{gone.l1_size} * 8)));
  FERRY_TRY_VOID(m.fix_copied_flags());
  return m.sync();
}

} // namespace ferry::qcow2
