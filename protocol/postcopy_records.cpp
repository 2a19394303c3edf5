#include "protocol/postcopy_records.hpp"

#include "protocol/migration_stream.hpp"
#include "protocol/protocol_error.hpp"
#include "protocol/wire_bytes.hpp"

#include <string>

namespace ferry::mig {

namespace {

using wire::get;
using wire::put;

caf::error bad(std::string what) {
  return make_protocol_error(protocol_errc::malformed, "postcopy: " + std::move(what));
}

} // namespace

uint64_t discard_words::word(size_t i) const {
  return get<uint64_t>(words.data() + i * 8);
}

std::vector<uint8_t> encode_discard(uint64_t first_pfn, std::span<const uint64_t> words) {
  std::vector<uint8_t> out;
  out.reserve(16 + words.size() * 8);
  put(out, first_pfn);
  put(out, static_cast<uint32_t>(words.size()));
  put(out, uint32_t{0});
  for (uint64_t w : words)
    put(out, w);
  return out;
}

caf::expected<discard_words> decode_discard(std::span<const uint8_t> p, uint64_t ram_pages) {
  if (p.size() < 16)
    return bad("discard record of " + std::to_string(p.size()) + " bytes");
  discard_words d;
  d.first_pfn = get<uint64_t>(p.data());
  d.word_count = get<uint32_t>(p.data() + 8);
  if (get<uint32_t>(p.data() + 12) != 0)
    return bad("discard record with reserved bits set");
  if (d.word_count == 0 || d.word_count > max_discard_words)
    return bad("discard record of " + std::to_string(d.word_count) + " words");
  if (p.size() != 16 + size_t{d.word_count} * 8)
    return bad("discard record of " + std::to_string(d.word_count) + " words in " +
               std::to_string(p.size()) + " bytes");
  if (d.first_pfn % 64 != 0 || d.first_pfn >= ram_pages)
    return bad("discard record from page " + std::to_string(d.first_pfn) + " (RAM has " +
               std::to_string(ram_pages) + " pages)");
  d.words = p.subspan(16);
  // Pages past the end of RAM: whole words, then the last word's tail.
  const uint64_t inside = ram_pages - d.first_pfn;
  const uint64_t full = inside / 64;
  for (uint64_t i = full; i < d.word_count; ++i) {
    const uint64_t allowed = i == full ? (uint64_t{1} << (inside % 64)) - 1 : 0;
    if ((d.word(i) & ~allowed) != 0)
      return bad("discard record names a page past the end of RAM");
  }
  return d;
}

std::vector<uint8_t> encode_postcopy_run(uint64_t awaited_pages) {
  std::vector<uint8_t> out;
  put(out, awaited_pages);
  return out;
}

caf::expected<uint64_t> decode_postcopy_run(std::span<const uint8_t> p) {
  if (p.size() != 8)
    return bad("postcopy-run record of " + std::to_string(p.size()) + " bytes");
  return get<uint64_t>(p.data());
}

void encode_postcopy_head(std::vector<uint8_t>& out, std::span<const postcopy_page> pages) {
  out.clear();
  put(out, static_cast<uint32_t>(pages.size()));
  put(out, uint32_t{0});
  for (const auto& pg : pages) {
    put(out, pg.pfn | (pg.zero ? zero_page_bit : 0));
    put(out, pg.zero ? uint64_t{0} : pg.hash);
  }
}

caf::expected<size_t> postcopy_head_size(std::span<const uint8_t> prefix) {
  if (prefix.size() < batch_prefix)
    return bad("postcopy-pages record of " + std::to_string(prefix.size()) + " bytes");
  const auto count = get<uint32_t>(prefix.data());
  if (count == 0 || count > max_postcopy_pages)
    return bad("postcopy-pages record of " + std::to_string(count) + " pages (1 to " +
               std::to_string(max_postcopy_pages) + ")");
  return batch_prefix + size_t{count} * postcopy_entry_size;
}

caf::expected<postcopy_batch> decode_postcopy_head(std::span<const uint8_t> head,
                                                   size_t payload_size, uint64_t ram_pages) {
  auto size = postcopy_head_size(head);
  if (!size)
    return size.error();
  const size_t head_size = *size;
  if (head.size() != head_size)
    return bad("postcopy-pages head of " + std::to_string(head.size()) + " bytes, expected " +
               std::to_string(head_size));
  if (get<uint32_t>(head.data() + 4) != 0)
    return bad("postcopy-pages record with reserved bits set");
  postcopy_batch b;
  b.count = get<uint32_t>(head.data());
  for (uint32_t i = 0; i < b.count; ++i) {
    const uint8_t* e = head.data() + batch_prefix + size_t{i} * postcopy_entry_size;
    const uint64_t raw = get<uint64_t>(e);
    postcopy_page& pg = b.pages[i];
    pg.zero = (raw & zero_page_bit) != 0;
    pg.pfn = raw & ~zero_page_bit;
    pg.hash = get<uint64_t>(e + 8);
    if (pg.pfn >= ram_pages)
      return bad("page " + std::to_string(pg.pfn) + " is outside RAM (" +
                 std::to_string(ram_pages) + " pages)");
    if (pg.zero && pg.hash != 0)
      return bad("zero page " + std::to_string(pg.pfn) + " with a hash");
    for (uint32_t j = 0; j < i; ++j)
      if (b.pages[j].pfn == pg.pfn)
        return bad("page " + std::to_string(pg.pfn) + " twice in one record");
    if (!pg.zero)
      ++b.data_pages;
  }
  if (payload_size != head_size + size_t{b.data_pages} * page_size)
    return bad("postcopy-pages record of " + std::to_string(payload_size) + " bytes for " +
               std::to_string(b.data_pages) + " pages of data");
  return b;
}

std::vector<uint8_t> encode(const page_request& r) {
  std::vector<uint8_t> out;
  put(out, r.pfn);
  put(out, r.count);
  put(out, uint32_t{0});
  return out;
}

caf::expected<page_request> decode_page_request(std::span<const uint8_t> p, uint64_t ram_pages) {
  if (p.size() != page_request_size)
    return bad("page-request record of " + std::to_string(p.size()) + " bytes");
  page_request r;
  r.pfn = get<uint64_t>(p.data());
  r.count = get<uint32_t>(p.data() + 8);
  if (get<uint32_t>(p.data() + 12) != 0)
    return bad("page-request record with reserved bits set");
  if (r.count == 0 || r.count > max_postcopy_pages)
    return bad("page-request for " + std::to_string(r.count) + " pages (1 to " +
               std::to_string(max_postcopy_pages) + ")");
  if (r.pfn >= ram_pages || r.count > ram_pages - r.pfn)
    return bad("page-request for pages " + std::to_string(r.pfn) + ".." +
               std::to_string(r.pfn + r.count - 1) + " outside RAM (" + std::to_string(ram_pages) +
               " pages)");
  return r;
}

} // namespace ferry::mig
