#pragma once
// mapped-ram's page I/O: the source writes each guest page with data to its
// fixed offset in the file (again, in place, when a later pass finds it
// dirty), the destination reads them back, each on a few named threads
// ("mig-mapped/N") working on separate stripes of RAM in parallel.

#include "agent/migration/rate_limiter.hpp"
#include "agent/migration/thread_registry.hpp"
#include "agent/vmm/dirty_bitmap.hpp"
#include "agent/vmm/guest_memory.hpp"
#include "protocol/mapped_ram_file.hpp"
#include "protocol/page_digest.hpp"

#include <caf/expected.hpp>

#include <atomic>
#include <cstdint>
#include <vector>

namespace ferry {

struct mapped_ram_totals {
  uint64_t data_pages = 0; // written (or read) with their data
  uint64_t zero_pages = 0; // left as holes
};

// The pages of `todo` into `fd` at l's offsets, their bits set in `bits`
// (l.bitmap_bytes()) and their hashes in `digest`; a page in `known_zero`,
// or reading zero, has its bit cleared and leaves the digest (its place
// stays a hole, or keeps stale data the bitmap disowns). Writes draw on
// `limiter` (max-bandwidth) when there is one.
struct mapped_ram_writes {
  unsigned threads = 1;
  rate_limiter* limiter = nullptr;
  thread_registry* registry = nullptr;
};
caf::expected<mapped_ram_totals>
write_mapped_ram(int fd, const mig::mapped_ram_layout& l, const guest_memory& mem,
                 const dirty_bitmap& todo, const dirty_bitmap* known_zero,
                 std::vector<uint8_t>& bits, mig::memory_digest& digest,
                 const std::atomic<bool>& stop, const mapped_ram_writes& how);
// After the last pass: the bitmap, then the header (a file cut short
// before has no valid header).
caf::expected<void> finish_mapped_ram(int fd, const mig::mapped_ram_layout& l,
                                      const std::vector<uint8_t>& bits);

// The header and bitmap of the mapped-ram file `fd`, checked against RAM of
// `ram_size` bytes before anything is read into a guest.
struct mapped_ram_index {
  mig::mapped_ram_layout layout;
  std::vector<uint8_t> bitmap;
};
caf::expected<mapped_ram_index> read_mapped_ram_index(int fd, uint64_t ram_size);

// The pages the bitmap names into `mem` (each into `digest`); every other
// page is made zero (written only where it is not already).
caf::expected<mapped_ram_totals> read_mapped_ram(int fd, const mapped_ram_index& index,
                                                 guest_memory& mem, unsigned threads,
                                                 mig::memory_digest& digest,
                                                 const std::atomic<bool>& stop,
                                                 thread_registry* registry);

} // namespace ferry
