#pragma once
// The mapped-ram file (migrate with the mapped-ram capability to file:): every
// page of guest RAM at a fixed offset, so writers and readers work in parallel
// and the file is about the size of RAM, sparse where pages are zero.
//
//   0               header (one 4 KiB block, below)
//   bitmap_offset   one bit per page: set = the page's data is in the file
//   pages_offset    page i at pages_offset + i * 4096 (holes where clear)
//   state_offset    the migration stream (docs/migration-stream.md) with
//                   no page records: hello, CPU and device state, digest, end
//
// Header, little endian: magic "FERRYMRM", u32 version, u32 page size,
// u64 RAM size, u64 bitmap offset, u64 pages offset, u64 state offset,
// u32 CRC-32C of the bytes before it; the rest of the block is zero.
// Offsets are multiples of 4 KiB (pages of 2 MiB alignment for the page
// region), in that order, without overlap.

#include <caf/expected.hpp>

#include <cstdint>
#include <span>
#include <vector>

namespace ferry::mig {

inline constexpr uint32_t mapped_ram_version = 1;
inline constexpr uint64_t mapped_ram_block = 4096;
inline constexpr uint64_t mapped_ram_pages_align = 2u << 20;

struct mapped_ram_layout {
  uint64_t ram_size = 0;
  uint64_t bitmap_offset = 0;
  uint64_t pages_offset = 0;
  uint64_t state_offset = 0;
  uint64_t pages() const { return ram_size / 4096; }
  uint64_t bitmap_bytes() const { return (pages() + 7) / 8; }
  uint64_t page_offset(uint64_t pfn) const { return pages_offset + pfn * 4096; }
};

// Where everything goes for RAM of `ram_size` bytes (a multiple of 4 KiB).
mapped_ram_layout plan_mapped_ram(uint64_t ram_size);

std::vector<uint8_t> encode_mapped_ram_header(const mapped_ram_layout& l);
// Refuses anything but this version's header for RAM of `ram_size` bytes in
// a file of `file_size` bytes: the reason names what disagrees.
caf::expected<mapped_ram_layout> decode_mapped_ram_header(std::span<const uint8_t> block,
                                                          uint64_t ram_size, uint64_t file_size);
// A bit set past the last page of RAM, if any (the bitmap of
// l.bitmap_bytes() bytes).
caf::expected<void> check_mapped_ram_bitmap(const mapped_ram_layout& l,
                                            std::span<const uint8_t> bitmap);

} // namespace ferry::mig
