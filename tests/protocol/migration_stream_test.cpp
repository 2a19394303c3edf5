#include "protocol/crc32c.hpp"
#include "protocol/migration_stream.hpp"
#include "protocol/page_compression.hpp"

#include <gtest/gtest.h>

#include <cstring>
#include <random>

using namespace ferry;

namespace {

constexpr size_t page = mig::page_size;

std::string error_of(const caf::error& e) {
  return to_string(e);
}

// A batch payload from the encoder; data page i is filled with i + 1.
std::vector<uint8_t> batch(std::vector<uint64_t> entries, size_t data_pages) {
  std::vector<uint8_t> data(data_pages * page);
  for (size_t i = 0; i < data_pages; ++i)
    std::memset(data.data() + i * page, static_cast<int>(i + 1), page);
  mig::page_batch_parts parts;
  mig::encode_pages(parts, entries, data);
  std::vector<uint8_t> p;
  parts.flatten(p);
  return p;
}

} // namespace

TEST(migration_stream, header_round_trips_and_rejects_corruption) {
  auto h = mig::encode_header(mig::record_type::pages, 1234, 0xdeadbeef);
  auto d = mig::decode_header(h);
  ASSERT_TRUE(d);
  EXPECT_EQ(d->type, mig::record_type::pages);
  EXPECT_EQ(d->length, 1234u);
  EXPECT_EQ(d->crc, 0xdeadbeefu);
  h[5] ^= 1; // a flipped length bit
  EXPECT_NE(error_of(mig::decode_header(h).error()).find("header checksum mismatch"),
            std::string::npos);
  auto big = mig::encode_header(mig::record_type::pages, mig::max_payload + 1, 0);
  EXPECT_NE(error_of(mig::decode_header(big).error()).find("exceeds the limit"), std::string::npos);
  auto unknown = mig::encode_header(static_cast<mig::record_type>(99), 0, 0);
  EXPECT_NE(error_of(mig::decode_header(unknown).error()).find("unknown record type 99"),
            std::string::npos);
}

TEST(migration_stream, payload_checksum_is_checked) {
  std::vector<uint8_t> payload{1, 2, 3};
  mig::record_header h{mig::record_type::sync, 3, crc32c(0, payload)};
  EXPECT_TRUE(mig::check_payload(h, payload));
  payload[1] = 9;
  EXPECT_FALSE(mig::check_payload(h, payload));
}

TEST(migration_stream, hello_round_trips_and_checks_magic_and_version) {
  mig::hello h;
  h.channel_index = 2;
  h.channel_count = 4;
  h.session[3] = 7;
  h.flags = mig::flag_multifd;
  h.ram_size = 1u << 30;
  h.uuid[15] = 1;
  auto bytes = mig::encode(h);
  ASSERT_EQ(bytes.size(), mig::hello_size);
  auto d = mig::decode_hello(bytes);
  ASSERT_TRUE(d);
  EXPECT_EQ(d->channel_index, 2);
  EXPECT_EQ(d->channel_count, 4);
  EXPECT_EQ(d->session, h.session);
  EXPECT_EQ(d->ram_size, h.ram_size);
  EXPECT_EQ(d->uuid, h.uuid);
  auto wrong_version = bytes;
  wrong_version[8] = 9;
  EXPECT_NE(error_of(mig::decode_hello(wrong_version).error()).find("version 9 is not supported"),
            std::string::npos);
  bytes[0] = 'Q';
  EXPECT_NE(error_of(mig::decode_hello(bytes).error()).find("bad magic"), std::string::npos);
  h.channel_index = 5; // beyond the count
  EXPECT_FALSE(mig::decode_hello(mig::encode(h)));
}

TEST(migration_stream, page_batches_are_checked_against_ram_before_use) {
  const uint64_t pages = 16;
  auto ok = batch({3, 5 | mig::zero_page_bit, 15}, 2);
  auto b = mig::decode_pages(ok, pages);
  ASSERT_TRUE(b);
  EXPECT_EQ(b->count, 3u);
  EXPECT_EQ(b->zero_pages, 1u);

  std::vector<uint8_t> ram(pages * page, 0xee);
  std::vector<std::atomic<uint64_t>> present(1);
  present[0] = ~0ull; // everything may hold data
  EXPECT_EQ(mig::apply_pages(*b, ram, present), 2 * page);
  EXPECT_EQ(ram[3 * page], 1);
  EXPECT_EQ(ram[15 * page + 4095], 2);
  EXPECT_TRUE(mig::is_zero_page(ram.data() + 5 * page));
  EXPECT_EQ(ram[4 * page], 0xee) << "pages not in the batch stay";

  EXPECT_NE(error_of(mig::decode_pages(batch({16}, 1), pages).error()).find("beyond guest RAM"),
            std::string::npos);
  EXPECT_NE(error_of(mig::decode_pages(batch({1, 2}, 1), pages).error()).find("data length"),
            std::string::npos);
  EXPECT_FALSE(mig::decode_pages(batch({}, 0), pages)) << "empty batch";
  auto truncated = batch({1, 2}, 2);
  truncated.resize(12);
  EXPECT_FALSE(mig::decode_pages(truncated, pages));
  auto reserved = batch({1}, 1);
  reserved[4] = 1;
  EXPECT_FALSE(mig::decode_pages(reserved, pages));
}

TEST(migration_stream, zero_pages_never_touch_pages_known_to_be_empty) {
  std::vector<uint8_t> ram(2 * page, 0);
  std::vector<std::atomic<uint64_t>> present(1);
  ram[page] = 5; // data the bitmap does not know about: left alone
  const auto zero = batch({1 | mig::zero_page_bit}, 0); // the batch views this buffer
  auto b = mig::decode_pages(zero, 2);
  ASSERT_TRUE(b);
  mig::apply_pages(*b, ram, present);
  EXPECT_EQ(ram[page], 5);
  present[0] = 2; // now it may hold data: cleared
  mig::apply_pages(*b, ram, present);
  EXPECT_EQ(ram[page], 0);
  // A page written by the stream is marked.
  const auto one = batch({0}, 1);
  auto data = mig::decode_pages(one, 2);
  ASSERT_TRUE(data);
  mig::apply_pages(*data, ram, present);
  EXPECT_EQ(present[0].load() & 1, 1u);
}

TEST(migration_stream, status_and_sync_round_trip) {
  auto s = mig::decode_status(mig::encode(mig::status_msg{1, "no"}));
  ASSERT_TRUE(s);
  EXPECT_EQ(s->code, 1u);
  EXPECT_EQ(s->text, "no");
  EXPECT_FALSE(mig::decode_status(std::vector<uint8_t>{1, 2}));
  auto n = mig::decode_sync(mig::encode_sync(42));
  ASSERT_TRUE(n);
  EXPECT_EQ(*n, 42u);
  EXPECT_FALSE(mig::decode_sync(std::vector<uint8_t>{1}));
}

// The devices record carries the source's run state (stream version 2).
TEST(migration_stream, device_section_carries_the_run_state_and_refuses_devices) {
  for (const bool running : {true, false}) {
    auto d = mig::decode_devices(mig::encode(mig::device_section{running}));
    ASSERT_TRUE(d);
    EXPECT_EQ(d->guest_running, running);
  }
  EXPECT_FALSE(mig::decode_devices(std::vector<uint8_t>{0, 0, 0, 0})) << "version 1's record";
  EXPECT_FALSE(mig::decode_devices(std::vector<uint8_t>{1, 0, 0, 0, 1, 0, 0, 0}))
    << "a device this agent does not have";
  EXPECT_FALSE(mig::decode_devices(std::vector<uint8_t>{0, 0, 0, 0, 3, 0, 0, 0}))
    << "an unknown flag";
}

TEST(page_compression, both_methods_round_trip_and_refuse_corruption) {
  const auto plain = batch({1, 2 | mig::zero_page_bit, 3}, 2);
  for (auto method : {mig::compression::zlib, mig::compression::zstd}) {
    std::vector<uint8_t> packed;
    ASSERT_TRUE(mig::compress_pages(method, 1, plain, packed));
    EXPECT_LT(packed.size(), plain.size() / 10) << mig::to_string(method);
    std::vector<uint8_t> out;
    ASSERT_TRUE(mig::decompress_pages(method, packed, out));
    EXPECT_EQ(out, plain);
    // The other method, a wrong plain length, or damaged data: refused.
    const auto other =
      method == mig::compression::zlib ? mig::compression::zstd : mig::compression::zlib;
    EXPECT_NE(error_of(mig::decompress_pages(other, packed, out).error()).find("agreed on"),
              std::string::npos);
    auto longer = packed;
    longer[4] += 1;
    EXPECT_FALSE(mig::decompress_pages(method, longer, out));
    auto damaged = packed;
    damaged[damaged.size() / 2] ^= 0x55;
    damaged.resize(damaged.size() - 3);
    EXPECT_FALSE(mig::decompress_pages(method, damaged, out));
    auto huge = packed;
    const uint32_t too_big = mig::max_payload + 1;
    std::memcpy(huge.data() + 4, &too_big, 4);
    EXPECT_NE(error_of(mig::decompress_pages(method, huge, out).error()).find("plain bytes"),
              std::string::npos);
  }
}

// The encoder and decoder agree on seeded random batches: every entry, every
// zero mark and every data byte come back, and the payload is exactly as
// long as the layout says.
TEST(migration_stream, page_batches_round_trip_through_encoder_and_decoder) {
  std::mt19937_64 rng{42};
  const uint64_t ram_pages = 1u << 20;
  for (int round = 0; round < 200; ++round) {
    const auto count = static_cast<size_t>(1 + rng() % mig::max_batch_pages);
    std::vector<uint64_t> entries;
    std::vector<uint8_t> data;
    for (size_t i = 0; i < count; ++i) {
      const uint64_t pfn = rng() % ram_pages;
      if (rng() % 3 == 0) {
        entries.push_back(pfn | mig::zero_page_bit);
        continue;
      }
      entries.push_back(pfn);
      const size_t at = data.size();
      data.resize(at + page);
      for (size_t b = 0; b < page; b += 8) {
        const uint64_t w = rng();
        std::memcpy(data.data() + at + b, &w, 8);
      }
    }
    mig::page_batch_parts parts;
    mig::encode_pages(parts, entries, data);
    std::vector<uint8_t> flat;
    parts.flatten(flat);
    ASSERT_EQ(flat.size(), mig::batch_prefix + count * 8 + data.size());
    auto b = mig::decode_pages(flat, ram_pages);
    ASSERT_TRUE(b) << error_of(b.error());
    ASSERT_EQ(b->count, count);
    ASSERT_EQ(b->entries.size(), count * 8);
    EXPECT_EQ(std::memcmp(b->entries.data(), entries.data(), count * 8), 0);
    ASSERT_EQ(b->data.size(), data.size());
    EXPECT_EQ(std::memcmp(b->data.data(), data.data(), data.size()), 0);
    size_t zeros = 0;
    for (auto e : entries)
      zeros += (e & mig::zero_page_bit) != 0 ? 1 : 0;
    EXPECT_EQ(b->zero_pages, zeros);
  }
}
