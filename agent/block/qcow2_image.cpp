#include "agent/block/qcow2_impl.hpp"

#include "common/file_io.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

namespace ferry::qcow2 {

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

caf::expected<void> image::impl::sync() {
  if (::fdatasync(fd) != 0)
    return make_system_error("qcow2 image: fdatasync");
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

} // namespace ferry::qcow2
