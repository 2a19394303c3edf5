// Internal snapshots: an L1 copy per snapshot plus, for a VM snapshot, the
// VM state past the disk's end; the snapshot table rewritten whole; QEMU's
// refcount rule (one count per L1 table reaching a cluster) and COPIED
// flags kept exact, so qemu-img check finds the image clean.

#include "agent/block/qcow2_impl.hpp"

#include "common/file_io.hpp"

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <ctime>

namespace ferry::qcow2 {

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
