#pragma once
// Guest RAM: one mapping in the agent — anonymous memory (private RAM,
// transparent huge pages advised), or a file descriptor mapped shared (a
// memfd when asked for, the backing file when shared, hugetlb). KVM slots,
// the migration engine and pmemsave all read and write through it.

#include "common/unique_fd.hpp"

#include <caf/expected.hpp>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace ferry {

// What backs guest RAM; mirrors QEMU's memory-backend-ram/-memfd/-file
// objects (memory-backend-memfd is kind::ram with `memfd`).
struct memory_backend {
  enum class kind { ram, file };
  kind type = kind::ram;
  uint64_t size = 0;    // bytes, multiple of the page size
  std::string mem_path; // kind::file only
  bool share = false;   // kind::file: on = map the file itself
  // kind::ram: the memfd lives on hugetlbfs (memory-backend-memfd,hugetlb=on),
  // in pages of hugetlb_size bytes (0: the kernel's default huge page).
  // kind::file on a hugetlbfs mount is huge without asking.
  bool hugetlb = false;
  uint64_t hugetlb_size = 0;
  // kind::ram: memory-backend-memfd asked for a memfd; otherwise private
  // RAM is anonymous memory in transparent huge pages where the kernel
  // offers them (as QEMU's), which fills and reads with far fewer faults.
  bool memfd = false;
  // kind::ram: an incoming migration is about to fill this RAM, so it is
  // populated in the background from creation (ram_prefill).
  bool prefill = false;
};

class ram_prefill;

class guest_memory {
public:
  // kind::ram: zeroed anonymous memory (a memfd with `memfd`/`hugetlb`).
  // kind::file with share=off: anonymous memory holding a private copy of the file's first `size`
  // bytes (a shorter file reads as zeros beyond its end). kind::file with share=on: the file
  // itself, grown to `size` if shorter, so guest writes land in the file as with QEMU. Huge pages
  // (hugetlb memfd, a file on hugetlbfs, share=off copies of one too) are reserved whole at
  // creation: too few free ones is an error here, never a SIGBUS later.
  static caf::expected<guest_memory> create(const memory_backend& backend);

  guest_memory(guest_memory&&) noexcept;
  guest_memory& operator=(guest_memory&&) noexcept;
  guest_memory(const guest_memory&) = delete;
  guest_memory& operator=(const guest_memory&) = delete;
  ~guest_memory();

  uint8_t* data() const { return base_; }
  uint64_t size() const { return size_; }
  uint64_t pages() const;
  // The backing's page size: 4096, or the huge page size. Dropping pages
  // (discard) works in whole pages of this size; 4 KiB pages are what the
  // rest of Ferry counts in either way.
  uint64_t backing_page_size() const { return backing_page_; }
  int fd() const { return fd_.get(); } // -1 for anonymous RAM
  // A file mapped shared (memory-backend-file,share=on): another process
  // mapping the same file sees the guest's memory (x-ignore-shared).
  bool shared_file() const { return shared_file_; }
  // A shared file's page `pfn` read through the file into `out` (4 KiB):
  // what the mapping holds, without faulting the page into this process
  // (a fault can cost more than the read where page faults are dear).
  caf::expected<void> read_shared_page(uint64_t pfn, uint8_t* out) const;
  std::span<uint8_t> bytes() const { return {base_, size_}; }

  // Bounds-checked view of [addr, addr + len); empty when out of range.
  std::span<uint8_t> range(uint64_t addr, uint64_t len) const;
  // Calls fn(first_page, end_page) for each run of pages that may hold data:
  // the rest were never written (holes of the RAM file; anonymous pages
  // neither present nor swapped out) and read zero, and reading them would
  // allocate and clear them first.
  template <class F>
  void for_each_data_run(F&& fn) const;
  // Once, for the first caller, if the RAM was created for an incoming
  // migration: calls fn(first_page, end_page) for each run the agent wrote
  // since (the boot sector), every other page reading zero — prefilled pages
  // show as data to for_each_data_run — and returns true. False otherwise.
  template <class F>
  bool take_fresh_runs(F&& fn);
  // Bytes the background prefill has populated (0 without one).
  uint64_t prefilled_bytes() const;
  // Postcopy's destination: the background prefill ends (it would make
  // present again pages that must stay absent until they arrive), then
  // pages are made absent: their contents dropped from the RAM file, so
  // the next access to one faults (userfault_region).
  void stop_prefill();
  caf::expected<void> discard(uint64_t first_page, uint64_t pages);
  // Copies a boot sector (at most 512 bytes) to 0x7c00, as a PC BIOS does.
  caf::expected<void> load_boot_sector(std::span<const uint8_t> sector);

private:
  // The [first_page, end_page) runs for for_each_data_run, in one pass:
  // SEEK_DATA/SEEK_HOLE over the RAM file, /proc/self/pagemap for anonymous RAM.
  std::vector<std::pair<uint64_t, uint64_t>> data_runs() const;
  static caf::expected<guest_memory> anonymous(uint64_t size);
  guest_memory(unique_fd fd, uint8_t* base, uint64_t size, uint64_t backing_page);

  unique_fd fd_;
  uint8_t* base_ = nullptr;
  uint64_t size_ = 0;
  uint64_t backing_page_ = 4096;
  bool huge_advised_ = false; // anonymous: MADV_HUGEPAGE until postcopy drops pages
  bool shared_file_ = false;
  bool fresh_ = false; // made for an incoming migration, not yet taken
  std::vector<std::pair<uint64_t, uint64_t>> written_runs_; // pages, while fresh_
  std::unique_ptr<ram_prefill> prefill_;                    // stopped before the unmap
};

template <class F>
bool guest_memory::take_fresh_runs(F&& fn) {
  if (!std::exchange(fresh_, false))
    return false;
  for (const auto& [first, end] : written_runs_)
    fn(first, end);
  written_runs_.clear();
  return true;
}

template <class F>
void guest_memory::for_each_data_run(F&& fn) const {
  for (const auto& [first, end] : data_runs())
    fn(first, end);
}

} // namespace ferry
