// libFuzzer: XBZRLE deltas come from the network, and the encoder must be
// exact. The first byte picks the mode:
//  - even: the rest is a delta from a hostile source; check() must refuse
//    it or apply() must stay inside the page.
//  - odd: the rest describes an old page and edits making a new one (a
//    fuzzer-chosen output limit too); encode() must overflow or produce a
//    delta that check() accepts and apply() turns back into the new page.

#include "protocol/xbzrle.hpp"

#include <cstdlib>
#include <cstring>
#include <vector>

namespace xb = ferry::mig::xbzrle;

namespace {
constexpr size_t page = 4096;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1)
    return 0;
  const uint8_t mode = data[0];
  ++data;
  --size;
  std::vector<uint8_t> old_page(page);
  if ((mode & 1) == 0) {
    for (size_t i = 0; i < page; ++i)
      old_page[i] = static_cast<uint8_t>(i * 31);
    if (xb::check({data, size}, page))
      xb::apply({data, size}, old_page);
    return 0;
  }
  if (size < 3)
    return 0;
  const size_t limit = size_t{data[0]} << 4 | data[1] >> 4;
  const uint8_t seed = data[2];
  for (size_t i = 0; i < page; ++i)
    old_page[i] = (seed & 1) != 0 ? 0 : static_cast<uint8_t>(i * seed);
  std::vector<uint8_t> new_page = old_page;
  // Edits: (u16 offset, u8 run length, u8 value) — runs of one value.
  for (size_t at = 3; at + 4 <= size; at += 4) {
    size_t off = 0;
    std::memcpy(&off, data + at, 2);
    off %= page;
    const size_t len = std::min<size_t>(data[at + 2], page - off);
    std::memset(new_page.data() + off, data[at + 3], len);
  }
  std::vector<uint8_t> delta(limit);
  const long n = xb::encode(old_page, new_page, delta);
  if (n < 0)
    return 0;
  if (static_cast<size_t>(n) > limit)
    std::abort();
  const std::span<const uint8_t> d{delta.data(), static_cast<size_t>(n)};
  if (!xb::check(d, page))
    std::abort();
  xb::apply(d, old_page);
  if (old_page != new_page)
    std::abort();
  return 0;
}
