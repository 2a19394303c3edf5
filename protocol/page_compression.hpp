#pragma once
// multifd-compression for page batches: each batch is compressed on its
// own (no state carried between records), so a channel's records stay
// independent and a corrupt one cannot poison the next. Decompression is
// bounded: the sender states the plain size, which must not exceed the
// stream's payload limit and must come out exactly.

#include <caf/expected.hpp>

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

namespace ferry::mig {

enum class compression : uint8_t { none = 0, zlib = 1, zstd = 2 };
const char* to_string(compression c);

// The compressed-pages record: u8 method, 3 bytes 0, u32 plain length, then
// the compressed page-batch payload.
inline constexpr size_t compressed_prefix = 8;

// Appends the compressed-pages payload for `plain` to `out` (cleared first).
caf::expected<void> compress_pages(compression c, int level, std::span<const uint8_t> plain,
                                   std::vector<uint8_t>& out);
// The plain page-batch payload of a compressed-pages record, into `out`;
// `expected` is the method both sides agreed on.
caf::expected<void> decompress_pages(compression expected, std::span<const uint8_t> payload,
                                     std::vector<uint8_t>& out);

} // namespace ferry::mig
