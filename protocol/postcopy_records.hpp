#pragma once
// The records of a postcopy migration (docs/migration-stream.md, "Postcopy"),
// encoders for the side that sends each and validating decoders for the side
// that receives it. Every page index and count is checked against the
// receiver's own RAM before it is acted on.
//
//   source -> destination, main channel:
//     discard         pages the destination must not use: dirtied after they
//                     were sent, or never sent; they arrive in postcopy
//     postcopy-run    after CPU and device state and the digest: switch
//     postcopy-pages  pages placed while the guest runs on the destination,
//                     each with its hash (the digest has been checked by then)
//   destination -> source, the return path (the main channel's other way):
//     page-request    pages a thread of the running guest is waiting on
//   after a broken link, on the new main channel of a resumed postcopy:
//     postcopy-received  (destination) the owed pages it placed, laid out as
//                     discard; the source owes the rest

#include <caf/expected.hpp>

#include <array>
#include <cstdint>
#include <span>
#include <vector>

namespace ferry::mig {

// discard: u64 first page (a multiple of 64), u32 word count, u32 reserved,
// then the words: bit i of word j stands for page first + 64 j + i.
inline constexpr uint32_t max_discard_words = 8192; // 512 Ki pages per record
struct discard_words {
  uint64_t first_pfn = 0;
  std::span<const uint8_t> words; // word_count * 8 bytes, little endian
  uint32_t word_count = 0;
  uint64_t word(size_t i) const;
};
std::vector<uint8_t> encode_discard(uint64_t first_pfn, std::span<const uint64_t> words);
// Refuses a range past `ram_pages` and a bit set beyond its end.
caf::expected<discard_words> decode_discard(std::span<const uint8_t> payload, uint64_t ram_pages);

// postcopy-run: u64 the number of pages discarded (both sides count them).
std::vector<uint8_t> encode_postcopy_run(uint64_t awaited_pages);
caf::expected<uint64_t> decode_postcopy_run(std::span<const uint8_t> payload);

// postcopy-pages: u32 count, u32 reserved, count entries of u64 page index
// (zero_page_bit for a zero page, which carries no data) and u64 page hash
// (page_digest's page_hash; 0 for a zero page), then the non-zero pages'
// data in entry order. The record's CRC covers the prefix and entries;
// each page is checked against its hash before it is placed.
inline constexpr uint32_t max_postcopy_pages = 64;
inline constexpr size_t postcopy_entry_size = 16;
struct postcopy_page {
  uint64_t pfn = 0;
  bool zero = false;
  uint64_t hash = 0;
};
struct postcopy_batch {
  std::array<postcopy_page, max_postcopy_pages> pages{};
  uint32_t count = 0;
  uint32_t data_pages = 0; // the non-zero ones
};
// Prefix and entries of a batch of `pages` (their data follows on the wire).
void encode_postcopy_head(std::vector<uint8_t>& out, std::span<const postcopy_page> pages);
// From the prefix (batch_prefix bytes): how long prefix and entries are.
caf::expected<size_t> postcopy_head_size(std::span<const uint8_t> prefix);
// Prefix and entries checked against a payload of `payload_size` bytes: the
// count, every index within RAM and none twice, the data length.
caf::expected<postcopy_batch> decode_postcopy_head(std::span<const uint8_t> head,
                                                   size_t payload_size, uint64_t ram_pages);

// page-request: u64 first page, u32 count (1 .. max_postcopy_pages), u32
// reserved.
struct page_request {
  uint64_t pfn = 0;
  uint32_t count = 1;
};
inline constexpr size_t page_request_size = 16;
std::vector<uint8_t> encode(const page_request& r);
// Refuses an empty or oversize range and one that leaves RAM.
caf::expected<page_request> decode_page_request(std::span<const uint8_t> payload,
                                                uint64_t ram_pages);

} // namespace ferry::mig
