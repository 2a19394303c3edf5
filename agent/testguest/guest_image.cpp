#include "agent/testguest/guest_image.hpp"

#include "agent/testguest/pattern.hpp"
#include "common/error.hpp"

#include <cstring>

extern "C" const uint8_t ferry_counter_guest_start[];
extern "C" const uint8_t ferry_counter_guest_end[];

namespace ferry::testguest {

namespace {

constexpr size_t param_words = 9; // magic, version, then the seven fields

caf::error invalid(const std::string& what) {
  return make_ferry_error(errc::invalid_argument, "test guest: " + what);
}

} // namespace

caf::expected<void> guest_params::validate() const {
  auto page_aligned = [](uint64_t v) { return v % page_bytes == 0; };
  if (!page_aligned(ram_top) || !page_aligned(pattern_start) || !page_aligned(ws_start))
    return invalid("ram-top, pattern-start and ws-start must be multiples of 4096");
  if (pattern_start < (1u << 20))
    return invalid("pattern-start must be at least 1 MiB (below is code and stack)");
  if (ram_top <= pattern_start || ram_top > max_ram_top)
    return invalid("ram-top must lie above pattern-start and at most 0xfeffc000");
  if (ws_start < pattern_start || uint64_t{ws_start} + uint64_t{ws_pages} * page_bytes > ram_top)
    return invalid("the working set must lie inside [pattern-start, ram-top)");
  return {};
}

caf::expected<guest_params> read_params(std::span<const uint8_t> sector) {
  if (sector.size() < param_offset + param_words * 4)
    return invalid("image shorter than its parameter block");
  uint32_t w[param_words];
  std::memcpy(w, sector.data() + param_offset, sizeof w);
  if (w[0] != param_magic)
    return invalid("no parameter block (bad magic) — not a Ferry test guest");
  if (w[1] != param_version)
    return invalid("parameter block version " + std::to_string(w[1]) + " is not supported");
  guest_params p;
  p.ram_top = w[2];
  p.pattern_start = w[3];
  p.ws_start = w[4];
  p.ws_pages = w[5];
  p.pace = w[6];
  p.seed = w[7];
  p.report_every = w[8];
  return p;
}

caf::expected<void> write_params(std::span<uint8_t> sector, const guest_params& p) {
  if (auto ok = p.validate(); !ok)
    return ok;
  if (sector.size() < param_offset + param_words * 4)
    return invalid("image shorter than its parameter block");
  const uint32_t w[param_words] = {param_magic,     param_version, p.ram_top,
                                   p.pattern_start, p.ws_start,    p.ws_pages,
                                   p.pace,          p.seed,        p.report_every};
  std::memcpy(sector.data() + param_offset, w, sizeof w);
  return {};
}

std::span<const uint8_t> builtin_image() {
  return {ferry_counter_guest_start,
          static_cast<size_t>(ferry_counter_guest_end - ferry_counter_guest_start)};
}

} // namespace ferry::testguest
