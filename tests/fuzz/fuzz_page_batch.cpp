// libFuzzer: page batches come from the network, and the encoder must write
// exactly what the decoder reads. The first byte picks the mode:
//  - even: the rest is a batch from a hostile source; decode_pages() must
//    refuse it, or accept it and then apply it inside guest RAM, and the
//    encoder, given what was decoded, must rebuild the input byte for byte
//    (the layout has one spelling).
//  - odd: the rest chooses entries (u16 page index, low bit of the next byte
//    = zero page); encode, decode: the same entries and data come back.

#include "protocol/migration_stream.hpp"

#include <cstdlib>
#include <cstring>
#include <vector>

namespace mig = ferry::mig;

namespace {
constexpr uint64_t ram_pages = 64;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1)
    return 0;
  const uint8_t mode = data[0];
  ++data;
  --size;
  if ((mode & 1) == 0) {
    auto b = mig::decode_pages({data, size}, ram_pages);
    if (!b)
      return 0;
    std::vector<uint8_t> ram(ram_pages * mig::page_size, 0xaa);
    std::vector<std::atomic<uint64_t>> maybe_nonzero(1);
    mig::apply_pages(*b, ram, maybe_nonzero);
    std::vector<uint64_t> entries(b->count);
    std::memcpy(entries.data(), b->entries.data(), b->entries.size());
    mig::page_batch_parts parts;
    mig::encode_pages(parts, entries, b->data);
    std::vector<uint8_t> again;
    parts.flatten(again);
    if (again.size() != size || std::memcmp(again.data(), data, size) != 0)
      std::abort();
    return 0;
  }
  std::vector<uint64_t> entries;
  std::vector<uint8_t> pages;
  for (size_t i = 0; i + 2 < size && entries.size() < mig::max_batch_pages; i += 3) {
    const uint64_t pfn = (uint64_t{data[i]} | uint64_t{data[i + 1]} << 8) % ram_pages;
    if ((data[i + 2] & 1) != 0) {
      entries.push_back(pfn | mig::zero_page_bit);
    } else {
      entries.push_back(pfn);
      pages.resize(pages.size() + mig::page_size, data[i + 2]);
    }
  }
  if (entries.empty())
    return 0;
  mig::page_batch_parts parts;
  mig::encode_pages(parts, entries, pages);
  std::vector<uint8_t> flat;
  parts.flatten(flat);
  auto b = mig::decode_pages(flat, ram_pages);
  if (!b || b->count != entries.size() || b->data.size() != pages.size() ||
      std::memcmp(b->entries.data(), entries.data(), b->entries.size()) != 0 ||
      (!pages.empty() && std::memcmp(b->data.data(), pages.data(), pages.size()) != 0))
    std::abort();
  return 0;
}
