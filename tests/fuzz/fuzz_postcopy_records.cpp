// libFuzzer: postcopy's records come from the network in both directions (a
// hostile destination sends page requests to a source, a hostile source
// sends discards and pages to a destination). The first byte picks the
// decoder; each must refuse the input or accept only what lies inside RAM,
// and what it accepts must encode back to the same bytes (one spelling).

#include "protocol/migration_stream.hpp"
#include "protocol/postcopy_records.hpp"

#include <cstdlib>
#include <cstring>
#include <vector>

namespace mig = ferry::mig;

namespace {

constexpr uint64_t ram_pages = 200; // not a multiple of 64: a partial last word

void request(const uint8_t* data, size_t size) {
  auto r = mig::decode_page_request({data, size}, ram_pages);
  if (!r)
    return;
  if (r->count == 0 || r->pfn + r->count > ram_pages)
    std::abort();
  const auto again = mig::encode(*r);
  if (again.size() != size || std::memcmp(again.data(), data, size) != 0)
    std::abort();
}

void discard(const uint8_t* data, size_t size) {
  auto d = mig::decode_discard({data, size}, ram_pages);
  if (!d)
    return;
  std::vector<uint64_t> words(d->word_count);
  for (size_t i = 0; i < words.size(); ++i) {
    words[i] = d->word(i);
    for (uint64_t bits = words[i]; bits != 0; bits &= bits - 1)
      if (d->first_pfn + i * 64 + static_cast<uint64_t>(__builtin_ctzll(bits)) >= ram_pages)
        std::abort();
  }
  const auto again = mig::encode_discard(d->first_pfn, words);
  if (again.size() != size || std::memcmp(again.data(), data, size) != 0)
    std::abort();
}

void pages(const uint8_t* data, size_t size) {
  auto head_size = mig::postcopy_head_size({data, size});
  if (!head_size || *head_size > size)
    return;
  auto b = mig::decode_postcopy_head({data, *head_size}, size, ram_pages);
  if (!b)
    return;
  uint32_t with_data = 0;
  for (uint32_t i = 0; i < b->count; ++i) {
    if (b->pages[i].pfn >= ram_pages)
      std::abort();
    with_data += b->pages[i].zero ? 0 : 1;
  }
  if (with_data != b->data_pages || size != *head_size + size_t{with_data} * mig::page_size)
    std::abort();
  std::vector<uint8_t> again;
  mig::encode_postcopy_head(again, {b->pages.data(), b->count});
  if (again.size() != *head_size || std::memcmp(again.data(), data, again.size()) != 0)
    std::abort();
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1)
    return 0;
  switch (data[0] % 4) {
    case 0:
      request(data + 1, size - 1);
      break;
    case 1:
      discard(data + 1, size - 1);
      break;
    case 2:
      pages(data + 1, size - 1);
      break;
    default:
      (void) mig::decode_postcopy_run({data + 1, size - 1});
  }
  return 0;
}
