#include "protocol/migration_stream.hpp"

#include "protocol/crc32c.hpp"
#include "protocol/protocol_error.hpp"
#include "protocol/wire_bytes.hpp"
#include "protocol/xbzrle.hpp"

#include <bit>
#include <cstring>

namespace ferry::mig {

namespace {

constexpr std::array<uint8_t, 8> magic = {'F', 'E', 'R', 'R', 'Y', 'M', 'I', 'G'};

using wire::get;
using wire::put;
using wire::put_bytes;

caf::error bad(std::string what) {
  return make_protocol_error(protocol_errc::malformed, "migration stream: " + std::move(what));
}

} // namespace

const char* to_string(record_type t) {
  switch (t) {
    case record_type::hello:
      return "hello";
    case record_type::hello_ack:
      return "hello-ack";
    case record_type::pages:
      return "pages";
    case record_type::sync:
      return "sync";
    case record_type::cpu_state:
      return "cpu-state";
    case record_type::devices:
      return "devices";
    case record_type::end:
      return "end";
    case record_type::ready:
      return "ready";
    case record_type::go:
      return "go";
    case record_type::abort:
      return "abort";
    case record_type::compressed_pages:
      return "compressed-pages";
    case record_type::xbzrle_pages:
      return "xbzrle-pages";
    case record_type::digest:
      return "digest";
    case record_type::live_pages:
      return "live-pages";
    case record_type::discard:
      return "discard";
    case record_type::postcopy_run:
      return "postcopy-run";
    case record_type::postcopy_pages:
      return "postcopy-pages";
    case record_type::page_request:
      return "page-request";
    case record_type::postcopy_received:
      return "postcopy-received";
    case record_type::switchover_ack:
      return "switchover-ack";
    case record_type::colo:
      return "colo";
    case record_type::heartbeat:
      return "heartbeat";
    case record_type::colo_output:
      return "colo-output";
    case record_type::shared_ram:
      return "shared-ram";
  }
  return "unknown";
}

std::array<uint8_t, header_size> encode_header(record_type type, uint32_t length, uint32_t crc) {
  std::array<uint8_t, header_size> h{};
  const auto t = static_cast<uint32_t>(type);
  std::memcpy(h.data(), &t, 4);
  std::memcpy(h.data() + 4, &length, 4);
  std::memcpy(h.data() + 8, &crc, 4);
  const uint32_t hcrc = crc32c(0, std::span<const uint8_t>{h.data(), 12});
  std::memcpy(h.data() + 12, &hcrc, 4);
  return h;
}

caf::expected<record_header> decode_header(std::span<const uint8_t> bytes) {
  if (bytes.size() != header_size)
    return bad("record header of " + std::to_string(bytes.size()) + " bytes");
  if (get<uint32_t>(bytes.data() + 12) != crc32c(0, bytes.first(12)))
    return bad("record header checksum mismatch");
  const auto t = get<uint32_t>(bytes.data());
  if (t < static_cast<uint32_t>(record_type::hello) || t > static_cast<uint32_t>(last_record_type))
    return bad("unknown record type " + std::to_string(t));
  record_header h;
  h.type = static_cast<record_type>(t);
  h.length = get<uint32_t>(bytes.data() + 4);
  h.crc = get<uint32_t>(bytes.data() + 8);
  if (h.length > max_payload)
    return bad(std::string{to_string(h.type)} + " record of " + std::to_string(h.length) +
               " bytes exceeds the limit of " + std::to_string(max_payload));
  return h;
}

caf::expected<void> check_crc(const record_header& h, uint32_t crc) {
  if (crc != h.crc)
    return bad(std::string{to_string(h.type)} + " record checksum mismatch");
  return {};
}

caf::expected<void> check_payload(const record_header& h, std::span<const uint8_t> payload) {
  if (payload.size() != h.length)
    return bad("payload length mismatch");
  if (h.type == record_type::live_pages)
    return {};
  return check_crc(h, crc32c(0, payload));
}

std::vector<uint8_t> encode(const hello& h) {
  std::vector<uint8_t> out;
  out.reserve(hello_size);
  put_bytes(out, magic.data(), magic.size());
  put(out, stream_version);
  put(out, h.channel_index);
  put(out, h.channel_count);
  put_bytes(out, h.session.data(), h.session.size());
  put(out, h.page_size);
  put(out, h.flags);
  put(out, h.ram_size);
  put_bytes(out, h.uuid.data(), h.uuid.size());
  return out;
}

caf::expected<hello> decode_hello(std::span<const uint8_t> p) {
  if (p.size() != hello_size)
    return bad("hello of " + std::to_string(p.size()) + " bytes");
  if (std::memcmp(p.data(), magic.data(), magic.size()) != 0)
    return bad("not a Ferry migration stream (bad magic)");
  const auto version = get<uint32_t>(p.data() + 8);
  if (version != stream_version)
    return bad("stream version " + std::to_string(version) +
               " is not supported (this agent reads " + std::to_string(stream_version) + ")");
  hello h;
  h.channel_index = get<uint16_t>(p.data() + 12);
  h.channel_count = get<uint16_t>(p.data() + 14);
  std::memcpy(h.session.data(), p.data() + 16, 16);
  h.page_size = get<uint32_t>(p.data() + 32);
  h.flags = get<uint32_t>(p.data() + 36);
  h.ram_size = get<uint64_t>(p.data() + 40);
  std::memcpy(h.uuid.data(), p.data() + 48, 16);
  const bool preempt_channel =
    h.channel_index == preempt_channel_index && (h.flags & flag_preempt) != 0;
  if (h.channel_index > h.channel_count && !preempt_channel)
    return bad("channel " + std::to_string(h.channel_index) + " of " +
               std::to_string(h.channel_count));
  return h;
}

std::vector<uint8_t> encode(const status_msg& s) {
  std::vector<uint8_t> out;
  put(out, s.code);
  put_bytes(out, reinterpret_cast<const uint8_t*>(s.text.data()), s.text.size());
  return out;
}

caf::expected<status_msg> decode_status(std::span<const uint8_t> p) {
  if (p.size() < 4 || p.size() > 4 + 4096)
    return bad("status message of " + std::to_string(p.size()) + " bytes");
  status_msg s;
  s.code = get<uint32_t>(p.data());
  s.text.assign(p.begin() + 4, p.end());
  return s;
}

void encode_pages(page_batch_parts& out, std::span<const uint64_t> entries,
                  std::span<const uint8_t> data) {
  // Entries go as they lie in memory: the stream is little endian, as is
  // every host Ferry runs on.
  static_assert(std::endian::native == std::endian::little);
  const auto count = static_cast<uint32_t>(entries.size());
  std::memcpy(out.prefix.data(), &count, 4);
  std::memset(out.prefix.data() + 4, 0, 4);
  out.parts[0] = {out.prefix.data(), out.prefix.size()};
  out.parts[1] = {const_cast<uint64_t*>(entries.data()), entries.size_bytes()};
  out.parts[2] = {const_cast<uint8_t*>(data.data()), data.size()};
}

void flatten(std::span<const iovec> parts, std::vector<uint8_t>& out) {
  size_t len = 0;
  for (const auto& part : parts)
    len += part.iov_len;
  out.resize(len);
  size_t at = 0;
  for (const auto& part : parts) {
    if (part.iov_len != 0)
      std::memcpy(out.data() + at, part.iov_base, part.iov_len);
    at += part.iov_len;
  }
}

void page_batch_parts::flatten(std::vector<uint8_t>& out) const {
  mig::flatten(parts, out);
}

caf::expected<size_t> page_batch_head_size(std::span<const uint8_t> prefix) {
  if (prefix.size() < batch_prefix)
    return bad("page batch too short");
  const auto count = get<uint32_t>(prefix.data());
  if (count == 0 || count > max_batch_pages)
    return bad("page batch of " + std::to_string(count) + " pages");
  if (get<uint32_t>(prefix.data() + 4) != 0)
    return bad("page batch reserved field set");
  return batch_prefix + size_t{count} * 8;
}

caf::expected<page_batch> decode_page_head(std::span<const uint8_t> head, size_t payload_size,
                                           uint64_t ram_pages) {
  const auto sized = page_batch_head_size(head);
  if (!sized)
    return sized.error();
  const size_t head_size = *sized;
  if (head.size() < head_size || payload_size < head_size)
    return bad("page batch entries truncated");
  page_batch b;
  b.count = get<uint32_t>(head.data());
  b.entries = head.subspan(batch_prefix, head_size - batch_prefix);
  for (uint32_t i = 0; i < b.count; ++i) {
    const auto e = get<uint64_t>(b.entries.data() + size_t{i} * 8);
    const uint64_t pfn = e & ~zero_page_bit;
    if (pfn >= ram_pages)
      return bad("page " + std::to_string(pfn) + " is beyond guest RAM (" +
                 std::to_string(ram_pages) + " pages)");
    if ((e & zero_page_bit) != 0)
      ++b.zero_pages;
  }
  if (payload_size - head_size != size_t{b.count - b.zero_pages} * page_size)
    return bad("page batch data length does not match its entries");
  return b;
}

caf::expected<page_batch> decode_pages(std::span<const uint8_t> p, uint64_t ram_pages) {
  const auto head_size = page_batch_head_size(p);
  if (!head_size)
    return head_size.error();
  if (p.size() < *head_size)
    return bad("page batch entries truncated");
  auto b = decode_page_head(p.first(*head_size), p.size(), ram_pages);
  if (b)
    b->data = p.subspan(*head_size);
  return b;
}

bool is_zero_page(const uint8_t* page) {
  // Word compares; the compiler vectorises this loop.
  uint64_t acc = 0;
  for (size_t i = 0; i < page_size; i += 64) {
    uint64_t w[8];
    std::memcpy(w, page + i, 64);
    acc |= w[0] | w[1] | w[2] | w[3] | w[4] | w[5] | w[6] | w[7];
    if (acc != 0)
      return false;
  }
  return true;
}

uint64_t apply_pages(const page_batch& b, std::span<uint8_t> ram,
                     std::span<std::atomic<uint64_t>> maybe_nonzero, bool placed) {
  const uint8_t* src = b.data.data();
  uint64_t applied = 0;
  for (uint32_t i = 0; i < b.count; ++i) {
    const auto e = get<uint64_t>(b.entries.data() + size_t{i} * 8);
    const uint64_t pfn = e & ~zero_page_bit;
    uint8_t* dst = ram.data() + pfn * page_size;
    auto& word = maybe_nonzero[pfn / 64];
    const uint64_t bit = 1ull << (pfn % 64);
    if ((e & zero_page_bit) != 0) {
      if ((word.load(std::memory_order_relaxed) & bit) != 0 && !is_zero_page(dst))
        std::memset(dst, 0, page_size);
    } else {
      if (!placed) {
        std::memcpy(dst, src, page_size);
        src += page_size;
      }
      applied += page_size;
      if ((word.load(std::memory_order_relaxed) & bit) == 0)
        word.fetch_or(bit, std::memory_order_relaxed);
    }
  }
  return applied;
}

void begin_xbzrle(std::vector<uint8_t>& out) {
  out.assign(batch_prefix, 0);
}

void append_xbzrle(std::vector<uint8_t>& out, uint64_t pfn, std::span<const uint8_t> delta) {
  put(out, pfn);
  put(out, static_cast<uint32_t>(delta.size()));
  put_bytes(out, delta.data(), delta.size());
}

void finish_xbzrle(std::vector<uint8_t>& out, uint32_t count) {
  std::memcpy(out.data(), &count, sizeof count);
}

caf::expected<xbzrle_batch> decode_xbzrle(std::span<const uint8_t> p, uint64_t ram_pages) {
  if (p.size() < batch_prefix)
    return bad("XBZRLE batch too short");
  xbzrle_batch b;
  b.count = get<uint32_t>(p.data());
  if (b.count == 0 || b.count > max_batch_pages)
    return bad("XBZRLE batch of " + std::to_string(b.count) + " pages");
  if (get<uint32_t>(p.data() + 4) != 0)
    return bad("XBZRLE batch reserved field set");
  b.body = p.subspan(batch_prefix);
  size_t at = 0;
  for (uint32_t i = 0; i < b.count; ++i) {
    if (b.body.size() - at < 12)
      return bad("XBZRLE batch entry " + std::to_string(i) + " truncated");
    const auto pfn = get<uint64_t>(b.body.data() + at);
    const auto len = get<uint32_t>(b.body.data() + at + 8);
    at += 12;
    if (pfn >= ram_pages)
      return bad("page " + std::to_string(pfn) + " is beyond guest RAM (" +
                 std::to_string(ram_pages) + " pages)");
    if (len == 0 || len > page_size || len > b.body.size() - at)
      return bad("XBZRLE delta of page " + std::to_string(pfn) + " has a bad length");
    if (auto ok = xbzrle::check(b.body.subspan(at, len), page_size); !ok)
      return ok.error();
    at += len;
  }
  if (at != b.body.size())
    return bad("XBZRLE batch has trailing bytes");
  return b;
}

uint64_t apply_xbzrle(const xbzrle_batch& b, std::span<uint8_t> ram,
                      std::span<std::atomic<uint64_t>> maybe_nonzero) {
  size_t at = 0;
  uint64_t applied = 0;
  for (uint32_t i = 0; i < b.count; ++i) {
    const auto pfn = get<uint64_t>(b.body.data() + at);
    const auto len = get<uint32_t>(b.body.data() + at + 8);
    at += 12;
    xbzrle::apply(b.body.subspan(at, len), ram.subspan(pfn * page_size, page_size));
    at += len;
    applied += len;
    auto& word = maybe_nonzero[pfn / 64];
    word.fetch_or(1ull << (pfn % 64), std::memory_order_relaxed);
  }
  return applied;
}

std::vector<uint8_t> encode_sync(uint64_t pass) {
  std::vector<uint8_t> out;
  put(out, pass);
  return out;
}

caf::expected<uint64_t> decode_sync(std::span<const uint8_t> p) {
  if (p.size() != 8)
    return bad("sync of " + std::to_string(p.size()) + " bytes");
  return get<uint64_t>(p.data());
}

std::vector<uint8_t> encode_digest(uint64_t digest) {
  return encode_sync(digest); // the same shape: one u64
}

caf::expected<uint64_t> decode_digest(std::span<const uint8_t> p) {
  if (p.size() != 8)
    return bad("digest of " + std::to_string(p.size()) + " bytes");
  return get<uint64_t>(p.data());
}

namespace {
constexpr uint32_t device_flag_running = 1u << 0;
} // namespace

std::vector<uint8_t> encode(const device_section& d) {
  std::vector<uint8_t> out;
  put(out, uint32_t{0});
  put(out, d.guest_running ? device_flag_running : 0u);
  return out;
}

caf::expected<device_section> decode_devices(std::span<const uint8_t> p) {
  if (p.size() != 8)
    return bad("devices record of " + std::to_string(p.size()) + " bytes");
  if (get<uint32_t>(p.data()) != 0)
    return bad("device state for devices this agent does not have");
  const auto flags = get<uint32_t>(p.data() + 4);
  if ((flags & ~device_flag_running) != 0)
    return bad("unknown device-section flags " + std::to_string(flags));
  return device_section{(flags & device_flag_running) != 0};
}

} // namespace ferry::mig
