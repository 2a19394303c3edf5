#pragma once
// Ferry's migration stream (docs/migration-stream.md): records of a 16-byte
// header (type, payload length, payload CRC-32C, header CRC-32C) and a
// payload. Encoders for the source, validating decoders for the destination:
// every length, count and page index is checked against the destination's
// own RAM before a byte of guest memory is touched.

#include <caf/expected.hpp>

#include <sys/uio.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace ferry::mig {

// 2: the devices record carries the guest's run state. 3: the switchover
// digest. 4: live-pages records (zero-copy-send). 5: page data outside the
// records' CRC, XXH3 as the digest's page hash.
inline constexpr uint32_t stream_version = 5;
inline constexpr uint32_t page_size = 4096;
inline constexpr size_t header_size = 16;
// A page batch holds at most this many pages (1 MiB of data).
inline constexpr uint32_t max_batch_pages = 256;
// Larger than any record a source sends (a full page batch, or the CPU
// state of 64 vCPUs); a header announcing more is refused before reading.
inline constexpr uint32_t max_payload = 4u << 20;

enum class record_type : uint32_t {
  hello = 1,             // first record of every channel (source -> destination)
  hello_ack = 2,         // the destination accepts or refuses the main channel
  pages = 3,             // a batch of RAM pages (its CRC leaves out the page data)
  sync = 4,              // end of a pass over the dirty log on this channel
  cpu_state = 5,         // the paused guest's vCPUs (guest::save_cpu_state)
  devices = 6,           // emulated device state
  end = 7,               // nothing follows on this channel
  ready = 8,             // destination: everything loaded, waiting for go
  go = 9,                // source: the destination owns the guest now
  abort = 10,            // either side gives up; payload says why
  compressed_pages = 11, // a page batch, compressed (page_compression.hpp)
  xbzrle_pages = 12,     // pages as deltas from the destination's copy
  digest = 13,           // source: the switchover digest of what it sent (page_digest.hpp)
  // A page batch sent straight from live guest memory (zero-copy-send): the
  // kernel reads the pages while they go out. Laid out, and checked, as
  // `pages`.
  live_pages = 14,
  // Postcopy (postcopy_records.hpp): the pages the destination must wait
  // for, the switch, pages placed while the guest runs there, and the
  // destination's requests for the pages its guest is waiting on.
  discard = 15,
  postcopy_run = 16,
  postcopy_pages = 17,
  page_request = 18,
  // A recovering postcopy: the pages the destination placed of those it was
  // owed (laid out as discard).
  postcopy_received = 19,
  // switchover-ack: the destination lets the source switch over (it has no
  // device that needs time first, so it says so once the channels are up).
  switchover_ack = 20,
  // COLO (colo_records.hpp): the checkpoint sequence's messages, and each
  // side's heartbeat.
  colo = 21,
  heartbeat = 22,
  // COLO's compare mode: the secondary's output, and the positions the
  // primary tells it (colo_records.hpp).
  colo_output = 23,
  // x-ignore-shared: samples of the shared RAM file the destination must
  // map to hold the guest's RAM (shared_ram_check.hpp).
  shared_ram = 24,
};
// The newest type; a header naming any later one is refused.
inline constexpr record_type last_record_type = record_type::shared_ram;
const char* to_string(record_type t);

struct record_header {
  record_type type = record_type::end;
  uint32_t length = 0;
  // Of the payload; for pages and live-pages of the batch's prefix and
  // entries only: page data is proven by the switchover digest (the
  // destination compares before the guest may run), so a source can send
  // it from a running guest's memory without copying it first.
  uint32_t crc = 0;
};

std::array<uint8_t, header_size> encode_header(record_type type, uint32_t length, uint32_t crc);
// Refuses unknown types, oversize payloads and a corrupt header.
caf::expected<record_header> decode_header(std::span<const uint8_t> bytes);
// The payload's CRC against its header (a record without page data).
caf::expected<void> check_payload(const record_header& h, std::span<const uint8_t> payload);
// The CRC of a payload read in pieces against its header.
caf::expected<void> check_crc(const record_header& h, uint32_t crc);

// Capabilities both sides must agree on.
inline constexpr uint32_t flag_multifd = 1u << 0;
inline constexpr uint32_t flag_validate_uuid = 1u << 1;
// Bits 2-3: multifd-compression (mig::compression).
inline constexpr uint32_t compression_shift = 2;
inline constexpr uint32_t compression_mask = 3u << compression_shift;
// postcopy-ram: the source may switch to postcopy; the destination must be
// able to take pages while its guest runs (userfaultfd).
inline constexpr uint32_t flag_postcopy = 1u << 4;
// The source resumes a paused postcopy (migrate resume=true): the hello
// carries the session it began with.
inline constexpr uint32_t flag_resume = 1u << 5;
// postcopy-preempt: one more channel, opened with the others, carries the
// pages the destination asks for in postcopy (so they need not wait behind
// the background stream). Its hello has this channel index.
inline constexpr uint32_t flag_preempt = 1u << 6;
inline constexpr uint16_t preempt_channel_index = 0xffff;
// switchover-ack: the source waits for the destination's switchover-ack
// record before it stops the guest.
inline constexpr uint32_t flag_switchover_ack = 1u << 7;
// release-ram (the source's alone): in postcopy the destination tells, every
// quarter second, which owed pages it has placed since it last said
// (postcopy-received records on the return path), and the source frees
// them — only pages the destination holds, so a recovery never needs one.
inline constexpr uint32_t flag_release_ram = 1u << 8;
// x-colo: the destination keeps the guest as a COLO secondary instead of
// taking it; checkpoints follow (colo_records.hpp).
inline constexpr uint32_t flag_colo = 1u << 9;
// With flag_colo: compare mode — the secondary runs from each checkpoint too
// and sends its output to be compared (colo-output records).
inline constexpr uint32_t flag_colo_compare = 1u << 10;
// x-ignore-shared: guest RAM is a file both sides map shared; no page
// goes on the wire, a shared-ram record proves the destination maps the
// same file.
inline constexpr uint32_t flag_ignore_shared = 1u << 11;
// mapped-ram: the stream is the state region of a mapped-ram file
// (mapped_ram_file.hpp); the pages are at their offsets before it.
inline constexpr uint32_t flag_mapped_ram = 1u << 12;

struct hello {
  uint16_t channel_index = 0; // 0 = main channel, 1..count = multifd
  uint16_t channel_count = 0; // multifd channels (0 without multifd)
  std::array<uint8_t, 16> session{};
  uint32_t page_size = mig::page_size;
  uint32_t flags = 0;
  uint64_t ram_size = 0;
  std::array<uint8_t, 16> uuid{};
};
inline constexpr size_t hello_size = 64;
std::vector<uint8_t> encode(const hello& h);
caf::expected<hello> decode_hello(std::span<const uint8_t> payload);

// hello_ack / ready / go / abort: a code (0 = ok) and a reason.
struct status_msg {
  uint32_t code = 0;
  std::string text;
};
std::vector<uint8_t> encode(const status_msg& s);
caf::expected<status_msg> decode_status(std::span<const uint8_t> payload);

// A page batch: u32 count, u32 reserved, count u64 entries (page index, top
// bit set for a zero page), then the data of the non-zero pages in order.
inline constexpr uint64_t zero_page_bit = 1ull << 63;
inline constexpr size_t batch_prefix = 8;

struct page_batch {
  std::span<const uint8_t> entries; // count * 8 bytes, little endian
  std::span<const uint8_t> data;
  uint32_t count = 0;
  uint32_t zero_pages = 0;
};
// The encoder's view of a batch: the three parts of one record payload —
// prefix, entries, data — pointing at the caller's buffers (no copy of page
// data). Not copyable: parts[0] points at its own prefix.
struct page_batch_parts {
  std::array<uint8_t, batch_prefix> prefix{};
  std::array<iovec, 3> parts{};
  page_batch_parts() = default;
  page_batch_parts(const page_batch_parts&) = delete;
  page_batch_parts& operator=(const page_batch_parts&) = delete;
  size_t size() const { return parts[0].iov_len + parts[1].iov_len + parts[2].iov_len; }
  // The payload in one piece (for a compressor).
  void flatten(std::vector<uint8_t>& out) const;
};
// Pieces of a payload, wherever they lie, in one buffer (for a compressor).
void flatten(std::span<const iovec> parts, std::vector<uint8_t>& out);
// `entries` are page indexes, zero pages with zero_page_bit; `data` holds
// the non-zero pages' bytes in entry order. What decode_pages() reads back.
void encode_pages(page_batch_parts& out, std::span<const uint64_t> entries,
                  std::span<const uint8_t> data);
// Checks every entry against `ram_pages` and the data length against the
// non-zero entries.
caf::expected<page_batch> decode_pages(std::span<const uint8_t> payload, uint64_t ram_pages);
// The same in two steps, for a reader that puts the page data straight
// where it belongs: from the batch's prefix (batch_prefix bytes), how long
// prefix and entries are; then those (`head`) checked against a payload of
// `payload_size` bytes. The batch's `data` stays empty.
caf::expected<size_t> page_batch_head_size(std::span<const uint8_t> prefix);
caf::expected<page_batch> decode_page_head(std::span<const uint8_t> head, size_t payload_size,
                                           uint64_t ram_pages);
// Writes a decoded batch into `ram` (ram_pages * page_size bytes).
// `maybe_nonzero` has a bit per page that may hold data: a zero page whose
// bit is clear is skipped without touching it (a first touch costs a page
// fault and an allocation), every page written gets its bit set. Returns
// the bytes of page data applied.
// `placed`: the pages' data is in `ram` already (decode_page_head's reader
// put it there); only zero pages and the bits are seen to.
uint64_t apply_pages(const page_batch& b, std::span<uint8_t> ram,
                     std::span<std::atomic<uint64_t>> maybe_nonzero, bool placed = false);

// An XBZRLE batch: u32 count, u32 reserved, then per page u64 page index,
// u32 delta length (1 .. page_size) and the delta (xbzrle.hpp), which the
// destination applies to the copy it already holds.
struct xbzrle_batch {
  std::span<const uint8_t> body; // the entries
  uint32_t count = 0;
};
// Starts a batch payload in `out` (cleared); append_xbzrle adds a page and
// finish_xbzrle writes the count.
void begin_xbzrle(std::vector<uint8_t>& out);
void append_xbzrle(std::vector<uint8_t>& out, uint64_t pfn, std::span<const uint8_t> delta);
void finish_xbzrle(std::vector<uint8_t>& out, uint32_t count);
// Checks every page index, length and delta before anything is applied.
caf::expected<xbzrle_batch> decode_xbzrle(std::span<const uint8_t> payload, uint64_t ram_pages);
// Applies a decoded batch to `ram`; returns the delta bytes applied.
uint64_t apply_xbzrle(const xbzrle_batch& b, std::span<uint8_t> ram,
                      std::span<std::atomic<uint64_t>> maybe_nonzero);

// u64 pass number.
std::vector<uint8_t> encode_sync(uint64_t pass);
caf::expected<uint64_t> decode_sync(std::span<const uint8_t> payload);
// u64: the source's memory_digest value at switchover.
std::vector<uint8_t> encode_digest(uint64_t digest);
caf::expected<uint64_t> decode_digest(std::span<const uint8_t> payload);

// The devices record: u32 device count (0: no emulated device holds state
// yet), u32 flags. Bit 0: the guest ran when the migration stopped it; a
// guest that was paused stays paused on the destination (QEMU's global
// run state).
struct device_section {
  bool guest_running = true;
};
std::vector<uint8_t> encode(const device_section& d);
// Refuses device state this agent has no device for, and unknown flags.
caf::expected<device_section> decode_devices(std::span<const uint8_t> payload);

bool is_zero_page(const uint8_t* page);

} // namespace ferry::mig
