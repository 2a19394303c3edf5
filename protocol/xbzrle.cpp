#include "protocol/xbzrle.hpp"

#include "protocol/protocol_error.hpp"

#include <cstring>
#include <string>

namespace ferry::mig::xbzrle {

namespace {

// A pair header costs at least two bytes: an unchanged gap shorter than
// this is cheaper sent as part of the changed run.
constexpr size_t min_gap = 3;
// ULEB128 of a value below 2^21; pages are far smaller.
constexpr size_t max_uleb_bytes = 3;

size_t put_uleb(uint8_t* out, size_t v) {
  size_t n = 0;
  do {
    uint8_t b = v & 0x7f;
    v >>= 7;
    if (v != 0)
      b |= 0x80;
    out[n++] = b;
  } while (v != 0);
  return n;
}

// Reads one ULEB128 at `at`; false on truncation or an over-long number.
bool get_uleb(std::span<const uint8_t> in, size_t& at, size_t& v) {
  v = 0;
  for (size_t i = 0; i < max_uleb_bytes; ++i) {
    if (at >= in.size())
      return false;
    const uint8_t b = in[at++];
    v |= static_cast<size_t>(b & 0x7f) << (7 * i);
    if ((b & 0x80) == 0)
      return true;
  }
  return false;
}

size_t same_run(const uint8_t* a, const uint8_t* b, size_t from, size_t n) {
  size_t i = from;
  while (i + 8 <= n) {
    uint64_t x;
    uint64_t y;
    std::memcpy(&x, a + i, 8);
    std::memcpy(&y, b + i, 8);
    if (x != y)
      break;
    i += 8;
  }
  while (i < n && a[i] == b[i])
    ++i;
  return i;
}

caf::error bad(const std::string& what) {
  return make_protocol_error(protocol_errc::malformed, "migration stream: XBZRLE delta: " + what);
}

} // namespace

long encode(std::span<const uint8_t> old_page, std::span<const uint8_t> new_page,
            std::span<uint8_t> out) {
  const size_t n = new_page.size();
  const uint8_t* a = old_page.data();
  const uint8_t* b = new_page.data();
  size_t o = 0;
  size_t i = 0;
  while (i < n) {
    const size_t run_start = i;
    i = same_run(a, b, i, n);
    if (i == n)
      break; // the rest is unchanged: nothing to say
    const size_t unchanged = i - run_start;
    const size_t changed_start = i;
    while (i < n) {
      if (a[i] != b[i]) {
        ++i;
        continue;
      }
      size_t j = i;
      while (j < n && j - i < min_gap && a[j] == b[j])
        ++j;
      if (j - i >= min_gap || j == n)
        break;
      i = j;
    }
    const size_t changed = i - changed_start;
    if (o + 2 * max_uleb_bytes + changed > out.size())
      return -1;
    o += put_uleb(out.data() + o, unchanged);
    o += put_uleb(out.data() + o, changed);
    std::memcpy(out.data() + o, b + changed_start, changed);
    o += changed;
  }
  return static_cast<long>(o);
}

caf::expected<void> check(std::span<const uint8_t> delta, size_t page_size) {
  size_t at = 0;
  size_t pos = 0;
  while (at < delta.size()) {
    size_t unchanged = 0;
    size_t changed = 0;
    if (!get_uleb(delta, at, unchanged) || !get_uleb(delta, at, changed))
      return bad("truncated or over-long run length at byte " + std::to_string(at));
    if (changed == 0)
      return bad("empty changed run at byte " + std::to_string(at));
    if (unchanged > page_size - pos || changed > page_size - pos - unchanged)
      return bad("run past the end of the page at byte " + std::to_string(at));
    if (changed > delta.size() - at)
      return bad("changed run of " + std::to_string(changed) + " bytes is truncated");
    pos += unchanged + changed;
    at += changed;
  }
  return {};
}

void apply(std::span<const uint8_t> delta, std::span<uint8_t> page) {
  size_t at = 0;
  size_t pos = 0;
  while (at < delta.size()) {
    size_t unchanged = 0;
    size_t changed = 0;
    get_uleb(delta, at, unchanged);
    get_uleb(delta, at, changed);
    pos += unchanged;
    std::memcpy(page.data() + pos, delta.data() + at, changed);
    pos += changed;
    at += changed;
  }
}

} // namespace ferry::mig::xbzrle
