// libFuzzer: the incoming migration stream is untrusted network input. The
// input is a list of records (u8 type, u16 length, payload); the harness
// frames each with a valid header and checksum, as a hostile source could,
// so the fuzzer reaches the payload decoders, then applies page batches to
// a small RAM (and XBZRLE batches, x-ignore-shared's samples, mapped-ram
// file headers). The raw input also goes through
// the header decoder. Nothing may crash, read or write outside RAM, or accept a page batch whose
// data does not match its entries.

#include "protocol/crc32c.hpp"
#include "protocol/mapped_ram_file.hpp"
#include "protocol/migration_stream.hpp"
#include "protocol/page_compression.hpp"
#include "protocol/shared_ram_check.hpp"
#include "protocol/xbzrle.hpp"

#include <cstdlib>
#include <cstring>
#include <vector>

namespace mig = ferry::mig;

namespace {
constexpr uint64_t ram_pages = 64;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size >= mig::header_size)
    (void) mig::decode_header({data, mig::header_size});

  static std::vector<uint8_t> ram(ram_pages * mig::page_size);
  static std::vector<std::atomic<uint64_t>> present(1);
  size_t at = 0;
  while (size - at >= 3) {
    const uint8_t type = data[at];
    uint16_t len = 0;
    std::memcpy(&len, data + at + 1, 2);
    at += 3;
    len = static_cast<uint16_t>(std::min<size_t>(len, size - at));
    const std::span<const uint8_t> payload{data + at, len};
    at += len;
    // 0xfe: the payload is a mapped-ram file's header block (for this RAM,
    // in a file as long as its first byte says, in MiB); the rest of the
    // payload its bitmap.
    if (type == 0xfe) {
      const uint64_t file_size = payload.empty() ? 0 : uint64_t{payload[0]} << 20;
      if (auto l = mig::decode_mapped_ram_header(payload, ram_pages * mig::page_size, file_size)) {
        if (l->state_offset >= file_size ||
            l->pages_offset + ram_pages * mig::page_size > file_size)
          std::abort(); // a layout that passed must fit the file
        (void) mig::check_mapped_ram_bitmap(*l, payload.subspan(std::min<size_t>(len, 52)));
      }
      continue;
    }
    // Types 0..12 as the byte mod 13; 0xff is x-ignore-shared's shared-ram.
    const auto rt =
      type == 0xff ? mig::record_type::shared_ram : static_cast<mig::record_type>(type % 13);
    const auto hdr = mig::encode_header(rt, len, ferry::crc32c(0, payload));
    auto h = mig::decode_header(hdr);
    if (!h)
      continue;
    if (!mig::check_payload(*h, payload))
      std::abort(); // a correctly framed record must pass its checksum
    switch (h->type) {
      case mig::record_type::hello:
        if (auto hello = mig::decode_hello(payload); hello && mig::encode(*hello).size() != len)
          std::abort();
        break;
      case mig::record_type::pages:
        if (auto b = mig::decode_pages(payload, ram_pages)) {
          if (b->data.size() != size_t{b->count - b->zero_pages} * mig::page_size)
            std::abort();
          mig::apply_pages(*b, ram, present);
        }
        break;
      case mig::record_type::sync:
        (void) mig::decode_sync(payload);
        break;
      case mig::record_type::digest:
        if (auto d = mig::decode_digest(payload); d && mig::encode_digest(*d).size() != 8)
          std::abort();
        break;
      case mig::record_type::devices:
        if (auto d = mig::decode_devices(payload))
          if (mig::encode(*d) != std::vector<uint8_t>(payload.begin(), payload.end()))
            std::abort(); // what decodes must encode back to the same bytes
        break;
      case mig::record_type::compressed_pages: {
        // Either method: the decompressors must refuse what is not theirs.
        static std::vector<uint8_t> plain;
        const auto method = (type & 0x80) != 0 ? mig::compression::zlib : mig::compression::zstd;
        if (mig::decompress_pages(method, payload, plain))
          if (auto b = mig::decode_pages(plain, ram_pages))
            mig::apply_pages(*b, ram, present);
        break;
      }
      case mig::record_type::xbzrle_pages:
        if (auto b = mig::decode_xbzrle(payload, ram_pages))
          mig::apply_xbzrle(*b, ram, present);
        break;
      case mig::record_type::shared_ram:
        if (auto d = mig::decode_shared_ram(payload, ram_pages)) {
          if (mig::encode_shared_ram(*d) != std::vector<uint8_t>(payload.begin(), payload.end()))
            std::abort(); // what decodes must encode back to the same bytes
          for (const auto& sample : *d)
            if (sample.pfn >= ram_pages)
              std::abort();
        }
        break;
      default:
        (void) mig::decode_status(payload);
    }
  }
  return 0;
}
