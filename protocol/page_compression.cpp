#include "protocol/page_compression.hpp"

#include "protocol/migration_stream.hpp"
#include "protocol/protocol_error.hpp"

#include <zlib.h>
#include <zstd.h>

#include <cstring>
#include <memory>
#include <string>

namespace ferry::mig {

namespace {

caf::error bad(std::string what) {
  return make_protocol_error(protocol_errc::malformed, "migration stream: " + std::move(what));
}

struct zstd_contexts {
  std::unique_ptr<ZSTD_CCtx, size_t (*)(ZSTD_CCtx*)> c{ZSTD_createCCtx(), ZSTD_freeCCtx};
  std::unique_ptr<ZSTD_DCtx, size_t (*)(ZSTD_DCtx*)> d{ZSTD_createDCtx(), ZSTD_freeDCtx};
};

// One context pair per thread: each channel has its own thread.
zstd_contexts& zstd_ctx() {
  thread_local zstd_contexts ctx;
  return ctx;
}

} // namespace

const char* to_string(compression c) {
  switch (c) {
    case compression::none:
      return "none";
    case compression::zlib:
      return "zlib";
    case compression::zstd:
      return "zstd";
  }
  return "unknown";
}

caf::expected<void> compress_pages(compression c, int level, std::span<const uint8_t> plain,
                                   std::vector<uint8_t>& out) {
  const auto plain_len = static_cast<uint32_t>(plain.size());
  size_t bound = 0;
  if (c == compression::zlib)
    bound = compressBound(static_cast<uLong>(plain.size()));
  else if (c == compression::zstd)
    bound = ZSTD_compressBound(plain.size());
  else
    return bad("no compression method");
  out.resize(compressed_prefix + bound);
  out[0] = static_cast<uint8_t>(c);
  out[1] = out[2] = out[3] = 0;
  std::memcpy(out.data() + 4, &plain_len, 4);
  uint8_t* dst = out.data() + compressed_prefix;
  size_t n = 0;
  if (c == compression::zlib) {
    auto len = static_cast<uLongf>(bound);
    if (compress2(dst, &len, plain.data(), static_cast<uLong>(plain.size()), level) != Z_OK)
      return bad("zlib compression failed");
    n = len;
  } else {
    n = ZSTD_compressCCtx(zstd_ctx().c.get(), dst, bound, plain.data(), plain.size(), level);
    if (ZSTD_isError(n) != 0)
      return bad(std::string{"zstd compression failed: "} + ZSTD_getErrorName(n));
  }
  out.resize(compressed_prefix + n);
  return {};
}

caf::expected<void> decompress_pages(compression expected, std::span<const uint8_t> payload,
                                     std::vector<uint8_t>& out) {
  if (payload.size() < compressed_prefix)
    return bad("compressed page record too short");
  const auto method = static_cast<compression>(payload[0]);
  if (method != expected || expected == compression::none)
    return bad(std::string{"compressed pages use method "} + std::to_string(payload[0]) +
               ", the migration agreed on " + to_string(expected));
  if (payload[1] != 0 || payload[2] != 0 || payload[3] != 0)
    return bad("compressed page record reserved bytes set");
  uint32_t plain_len = 0;
  std::memcpy(&plain_len, payload.data() + 4, 4);
  if (plain_len == 0 || plain_len > max_payload)
    return bad("compressed page record claims " + std::to_string(plain_len) + " plain bytes");
  out.resize(plain_len);
  const auto in = payload.subspan(compressed_prefix);
  if (method == compression::zlib) {
    auto len = static_cast<uLongf>(plain_len);
    const int rc = uncompress(out.data(), &len, in.data(), static_cast<uLong>(in.size()));
    if (rc != Z_OK || len != plain_len)
      return bad("zlib data of a page record is corrupt");
  } else {
    const size_t n =
      ZSTD_decompressDCtx(zstd_ctx().d.get(), out.data(), out.size(), in.data(), in.size());
    if (ZSTD_isError(n) != 0 || n != plain_len)
      return bad("zstd data of a page record is corrupt");
  }
  return {};
}

} // namespace ferry::mig
