#pragma once
// XBZRLE page deltas: a page is sent as the difference from the copy the
// destination already holds. The delta is a sequence of pairs
//   ULEB128 unchanged-length, ULEB128 changed-length, changed bytes
// walking the page from offset 0; bytes after the last pair are unchanged.
// A delta of zero bytes means "no change". The encoder merges unchanged
// gaps shorter than a pair header into the changed run, since splitting
// them would cost more than it saves.

#include <caf/expected.hpp>

#include <cstddef>
#include <cstdint>
#include <span>

namespace ferry::mig::xbzrle {

// The delta from `old_page` to `new_page` (same length) into `out`; its
// length, or -1 when it would not fit in `out` (the page should go whole).
long encode(std::span<const uint8_t> old_page, std::span<const uint8_t> new_page,
            std::span<uint8_t> out);

// Whether `delta` is well formed for a page of `page_size` bytes: every run
// inside the page, every changed run non-empty, no trailing garbage. Needs
// no page, so a whole record can be checked before memory is touched.
caf::expected<void> check(std::span<const uint8_t> delta, size_t page_size);

// Applies a delta that passed check() to `page` in place.
void apply(std::span<const uint8_t> delta, std::span<uint8_t> page);

} // namespace ferry::mig::xbzrle
