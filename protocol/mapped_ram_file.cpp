#include "protocol/mapped_ram_file.hpp"

#include "protocol/crc32c.hpp"
#include "protocol/protocol_error.hpp"
#include "protocol/wire_bytes.hpp"

#include <algorithm>
#include <array>
#include <string>

namespace ferry::mig {

namespace {

constexpr std::array<uint8_t, 8> magic = {'F', 'E', 'R', 'R', 'Y', 'M', 'R', 'M'};
constexpr size_t crc_at = 8 + 4 + 4 + 8 * 4;

caf::error bad(std::string what) {
  return make_protocol_error(protocol_errc::malformed, "mapped-ram file: " + std::move(what));
}

uint64_t round_up(uint64_t v, uint64_t to) {
  return (v + to - 1) / to * to;
}

} // namespace

mapped_ram_layout plan_mapped_ram(uint64_t ram_size) {
  mapped_ram_layout l;
  l.ram_size = ram_size;
  l.bitmap_offset = mapped_ram_block;
  l.pages_offset = round_up(l.bitmap_offset + l.bitmap_bytes(), mapped_ram_pages_align);
  l.state_offset = l.pages_offset + ram_size;
  return l;
}

std::vector<uint8_t> encode_mapped_ram_header(const mapped_ram_layout& l) {
  std::vector<uint8_t> out;
  wire::put_bytes(out, magic.data(), magic.size());
  wire::put(out, mapped_ram_version);
  wire::put(out, uint32_t{4096});
  wire::put(out, l.ram_size);
  wire::put(out, l.bitmap_offset);
  wire::put(out, l.pages_offset);
  wire::put(out, l.state_offset);
  wire::put(out, crc32c(0, std::span<const uint8_t>{out}));
  out.resize(mapped_ram_block, 0);
  return out;
}

caf::expected<mapped_ram_layout> decode_mapped_ram_header(std::span<const uint8_t> b,
                                                          uint64_t ram_size, uint64_t file_size) {
  if (b.size() < crc_at + 4)
    return bad("header of " + std::to_string(b.size()) + " bytes");
  if (!std::equal(magic.begin(), magic.end(), b.begin()))
    return bad("no mapped-ram header (was it saved with the mapped-ram capability?)");
  if (wire::get<uint32_t>(b.data() + crc_at) != crc32c(0, b.first(crc_at)))
    return bad("header checksum mismatch");
  if (const auto v = wire::get<uint32_t>(b.data() + 8); v != mapped_ram_version)
    return bad("version " + std::to_string(v) + " is not supported");
  if (const auto ps = wire::get<uint32_t>(b.data() + 12); ps != 4096)
    return bad("page size " + std::to_string(ps) + " differs from 4096");
  mapped_ram_layout l;
  l.ram_size = wire::get<uint64_t>(b.data() + 16);
  l.bitmap_offset = wire::get<uint64_t>(b.data() + 24);
  l.pages_offset = wire::get<uint64_t>(b.data() + 32);
  l.state_offset = wire::get<uint64_t>(b.data() + 40);
  if (l.ram_size != ram_size)
    return bad("it holds a guest of " + std::to_string(l.ram_size) +
               " bytes of RAM; this guest has " + std::to_string(ram_size));
  const bool aligned = l.bitmap_offset % mapped_ram_block == 0 &&
                       l.pages_offset % mapped_ram_block == 0 &&
                       l.state_offset % mapped_ram_block == 0;
  // In order, without overlap (no overflow: each bound is checked against
  // the file before it is added to).
  const bool ordered = l.bitmap_offset >= mapped_ram_block && l.bitmap_offset <= file_size &&
                       l.bitmap_bytes() <= file_size - l.bitmap_offset &&
                       l.pages_offset >= l.bitmap_offset + l.bitmap_bytes() &&
                       l.pages_offset <= file_size && ram_size <= file_size - l.pages_offset &&
                       l.state_offset >= l.pages_offset + ram_size && l.state_offset < file_size;
  if (!aligned || !ordered)
    return bad("its layout (bitmap at " + std::to_string(l.bitmap_offset) + ", pages at " +
               std::to_string(l.pages_offset) + ", state at " + std::to_string(l.state_offset) +
               ") does not fit a file of " + std::to_string(file_size) + " bytes");
  return l;
}

caf::expected<void> check_mapped_ram_bitmap(const mapped_ram_layout& l,
                                            std::span<const uint8_t> bitmap) {
  if (bitmap.size() != l.bitmap_bytes())
    return bad("bitmap of " + std::to_string(bitmap.size()) + " bytes");
  const uint64_t tail = l.pages() % 8;
  if (tail != 0 && (bitmap.back() >> tail) != 0)
    return bad("the bitmap names a page past the end of RAM");
  return {};
}

} // namespace ferry::mig
