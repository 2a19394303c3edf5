// The records a TLS channel carries after its handshake: headers refused
// when malformed, every negotiable cipher sealing and opening in order, and
// the stream over them — control records opened whole before use, bulk
// records decrypted in place and judged at their end — refusing whatever
// was altered, cut short or read out of turn.

#include "agent/transport/loopback_stream.hpp"
#include "agent/transport/sealed_records.hpp"
#include "agent/transport/tls_stream.hpp"
#include "common/error.hpp"

#include <gtest/gtest.h>
#include <openssl/obj_mac.h>

#include <numeric>
#include <string>
#include <vector>

namespace ferry {
namespace {

using sealed::kind;

sealed::direction_keys keys_for(int nid, size_t key_len, uint8_t seed) {
  sealed::direction_keys k;
  k.cipher_nid = nid;
  k.key.resize(key_len);
  std::iota(k.key.begin(), k.key.end(), seed);
  std::iota(k.iv.begin(), k.iv.end(), static_cast<uint8_t>(seed + 100));
  return k;
}

// What a channel whose handshake chose TLS_AES_128_GCM_SHA256 uses.
const sealed::direction_keys a_to_b = keys_for(sealed::record_cipher_for(NID_aes_128_gcm), 16, 1);
const sealed::direction_keys b_to_a = keys_for(sealed::record_cipher_for(NID_aes_128_gcm), 16, 50);

bool says(const caf::error& e, const std::string& what) {
  return describe(e).find(what) != std::string::npos;
}

TEST(sealed_records, headers_round_trip_and_malformed_ones_are_refused) {
  const auto raw = sealed::encode_header({kind::bulk, 4096});
  auto h = sealed::decode_header(raw);
  ASSERT_TRUE(h);
  EXPECT_EQ(h->type, kind::bulk);
  EXPECT_EQ(h->length, 4096u);
  const auto refused = [](std::array<uint8_t, sealed::header_size> r, const std::string& why) {
    auto d = sealed::decode_header(r);
    ASSERT_FALSE(d);
    EXPECT_TRUE(says(d.error(), why)) << describe(d.error());
  };
  auto r = raw;
  r[0] = 0;
  refused(r, "unknown kind 0");
  r[0] = 3;
  refused(r, "unknown kind 3");
  r = raw;
  r[2] = 1;
  refused(r, "reserved");
  refused(sealed::encode_header({kind::control, 0}), "0 bytes");
  refused(sealed::encode_header({kind::control, sealed::max_record + 1}), "allowed");
  EXPECT_TRUE(sealed::decode_header(sealed::encode_header({kind::control, sealed::max_record})));
}

TEST(sealed_records, records_use_ocb_for_aes_suites_and_chacha_as_negotiated) {
  EXPECT_EQ(sealed::record_cipher_for(NID_aes_128_gcm), NID_aes_128_ocb);
  EXPECT_EQ(sealed::record_cipher_for(NID_aes_256_gcm), NID_aes_256_ocb);
  EXPECT_EQ(sealed::record_cipher_for(NID_chacha20_poly1305), NID_chacha20_poly1305);
}

// Three records through every cipher the records may use (the pieces of
// 600 and 400 bytes leave OCB a partial block to hold back): in order they
// open; altered body, altered header, or one skipped, they do not.
TEST(sealed_records, every_cipher_opens_only_what_was_sealed_in_order) {
  for (const auto& [nid, key_len] : {std::pair{NID_aes_128_ocb, 16},
                                     {NID_aes_256_ocb, 32},
                                     {NID_aes_128_gcm, 16},
                                     {NID_aes_256_gcm, 32},
                                     {NID_chacha20_poly1305, 32}}) {
    const auto keys = keys_for(nid, static_cast<size_t>(key_len), 9);
    auto sealer = sealed::record_cipher::create(keys, true);
    ASSERT_TRUE(sealer) << nid;
    struct record {
      std::array<uint8_t, sealed::header_size> header;
      std::vector<uint8_t> body;
      std::array<uint8_t, sealed::tag_size> tag;
    };
    std::vector<record> sent;
    for (uint8_t i = 0; i < 3; ++i) {
      record r{sealed::encode_header({kind::control, 1000}), std::vector<uint8_t>(1000, i), {}};
      ASSERT_TRUE(sealer->begin(r.header));
      ASSERT_TRUE(sealer->update(r.body.data(), 600, r.body.data())); // in two pieces
      ASSERT_TRUE(sealer->update(r.body.data() + 600, 400, r.body.data() + 600));
      ASSERT_TRUE(sealer->finish(r.tag.data()));
      EXPECT_NE(r.body, std::vector<uint8_t>(1000, i)) << "sealed in place";
      sent.push_back(r);
    }
    const auto opens = [&](const std::vector<size_t>& order, auto alter) {
      auto opener = sealed::record_cipher::create(keys, false);
      EXPECT_TRUE(opener);
      bool all = true;
      for (size_t idx : order) {
        record r = sent[idx];
        alter(r);
        all = all && opener->begin(r.header) &&
              opener->update(r.body.data(), r.body.size(), r.body.data()) &&
              opener->finish(r.tag.data()) &&
              r.body == std::vector<uint8_t>(1000, static_cast<uint8_t>(idx));
      }
      return all;
    };
    const auto as_sent = [](record&) {};
    EXPECT_TRUE(opens({0, 1, 2}, as_sent)) << nid;
    EXPECT_FALSE(opens({0, 2}, as_sent)) << nid << ": a record dropped";
    EXPECT_FALSE(opens({1}, as_sent)) << nid << ": a record out of turn";
    EXPECT_FALSE(opens({0}, [](record& r) { r.body[500] ^= 1; })) << nid;
    EXPECT_FALSE(opens({0}, [](record& r) { r.header[4] ^= 1; })) << nid;
    EXPECT_FALSE(opens({0}, [](record& r) { r.tag[0] ^= 1; })) << nid;
  }
}

TEST(sealed_records, a_cipher_or_key_that_does_not_fit_is_refused) {
  EXPECT_FALSE(sealed::record_cipher::create(keys_for(NID_aes_128_gcm, 32, 1), true));
  EXPECT_FALSE(sealed::record_cipher::create(keys_for(NID_undef, 16, 1), true));
}

// What a writer puts on the wire for one control piece and `pages` bytes of
// placed data, then a second control piece.
struct wire {
  std::vector<uint8_t> control{std::vector<uint8_t>(20)};
  std::vector<uint8_t> pages;
  std::vector<uint8_t> tail{std::vector<uint8_t>(5, 0xee)};
  std::vector<uint8_t> bytes; // sealed
};

wire sealed_wire(size_t pages) {
  wire w;
  std::iota(w.control.begin(), w.control.end(), uint8_t{1});
  w.pages.resize(pages);
  for (size_t i = 0; i < pages; ++i)
    w.pages[i] = static_cast<uint8_t>(i * 7 + i / 4096);
  auto [a, b] = make_loopback_pair();
  auto writer = tls_stream::with_keys(std::move(a), a_to_b, b_to_a);
  EXPECT_TRUE(writer);
  std::vector<iovec> iov{{w.control.data(), w.control.size()}, {w.pages.data(), w.pages.size()}};
  EXPECT_TRUE((*writer)->write_placed(iov, 1));
  iovec t{w.tail.data(), w.tail.size()};
  EXPECT_TRUE((*writer)->write_all(std::span<iovec>{&t, 1}));
  EXPECT_TRUE((*writer)->finish());
  uint8_t buf[65536];
  for (;;) {
    auto r = b->read_some(buf, sizeof buf);
    if (!r || *r == 0)
      break;
    w.bytes.insert(w.bytes.end(), buf, buf + *r);
  }
  return w;
}

// A reader of `bytes` (ended after them), reads cut to `max_read`.
std::unique_ptr<byte_stream> reader_of(const std::vector<uint8_t>& bytes, size_t max_read = 0) {
  loopback_faults f;
  f.max_read = max_read;
  auto [c, d] = make_loopback_pair(f);
  std::vector<uint8_t> copy = bytes;
  iovec v{copy.data(), copy.size()};
  EXPECT_TRUE(c->write_all(std::span<iovec>{&v, 1}));
  EXPECT_TRUE(c->finish());
  auto r = tls_stream::with_keys(std::move(d), b_to_a, a_to_b);
  EXPECT_TRUE(r);
  return std::move(*r);
}

caf::expected<void> read_fully(byte_stream& s, uint8_t* p, size_t n, bool placed) {
  while (n > 0) {
    auto r = placed ? s.read_placed(p, n) : s.read_some(p, n);
    if (!r)
      return r.error();
    if (*r == 0)
      return stream_closed_by_peer();
    p += *r;
    n -= *r;
  }
  return {};
}

TEST(sealed_stream, placed_pages_and_control_bytes_arrive_byte_for_byte) {
  // 300 KiB of pages: more than one bulk record.
  const auto w = sealed_wire(size_t{75} * 4096);
  EXPECT_LT(w.bytes.size(), w.control.size() + w.pages.size() + w.tail.size() + size_t{5} * 24)
    << "a few records, not one per piece";
  for (const size_t max_read : {size_t{0}, size_t{1000}}) {
    for (const bool placed : {true, false}) {
      auto r = reader_of(w.bytes, max_read);
      std::vector<uint8_t> control(20), ram(w.pages.size()), tail(5);
      ASSERT_TRUE(read_fully(*r, control.data(), control.size(), false));
      ASSERT_TRUE(read_fully(*r, ram.data(), ram.size(), placed));
      ASSERT_TRUE(read_fully(*r, tail.data(), tail.size(), false));
      EXPECT_EQ(control, w.control);
      EXPECT_EQ(ram, w.pages) << "placed " << placed << " max_read " << max_read;
      EXPECT_EQ(tail, w.tail);
      uint8_t more = 0;
      auto end = r->read_some(&more, 1);
      ASSERT_TRUE(end);
      EXPECT_EQ(*end, 0u) << "a clean end after the last record";
    }
  }
}

// Page data read into runs apart in guest memory, in reads of 1000 bytes:
// OCB holds a partial block back between reads, never across a page (runs
// are whole pages). A run ending inside a cipher block, which only a hostile
// source's records can cause, is an error, not a write elsewhere.
TEST(sealed_stream, placed_runs_apart_in_memory_open_whole_and_a_run_off_a_block_is_refused) {
  const auto w = sealed_wire(size_t{4} * 4096);
  auto r = reader_of(w.bytes, 1000);
  std::vector<uint8_t> control(20);
  ASSERT_TRUE(read_fully(*r, control.data(), control.size(), false));
  std::vector<std::vector<uint8_t>> pages(4, std::vector<uint8_t>(4096));
  for (size_t i : {2, 0, 3, 1}) // any order of places; the bytes come in order
    ASSERT_TRUE(read_fully(*r, pages[i].data(), 4096, true)) << i;
  const std::vector<size_t> order{2, 0, 3, 1};
  for (size_t k = 0; k < 4; ++k)
    EXPECT_TRUE(std::equal(pages[order[k]].begin(), pages[order[k]].end(),
                           w.pages.begin() + static_cast<std::ptrdiff_t>(k * 4096)))
      << "page " << k;

  auto odd = reader_of(w.bytes);
  ASSERT_TRUE(read_fully(*odd, control.data(), control.size(), false));
  std::vector<uint8_t> a(4001), b(4096 * 4 - 4001);
  ASSERT_TRUE(read_fully(*odd, a.data(), a.size(), true));
  auto refused = read_fully(*odd, b.data(), b.size(), true);
  ASSERT_FALSE(refused);
  EXPECT_TRUE(says(refused.error(), "cipher block boundary")) << describe(refused.error());
}

TEST(sealed_stream, an_altered_control_record_hands_over_nothing) {
  auto w = sealed_wire(4096);
  w.bytes[sealed::header_size + 3] ^= 0x40; // inside the first control record
  auto r = reader_of(w.bytes);
  uint8_t b = 0;
  auto got = r->read_some(&b, 1);
  ASSERT_FALSE(got);
  EXPECT_TRUE(says(got.error(), "failed authentication")) << describe(got.error());
}

TEST(sealed_stream, an_altered_bulk_record_fails_the_read_that_ends_it) {
  auto w = sealed_wire(size_t{8} * 4096);
  // First record: header, 20 control bytes, tag; then the bulk record.
  const size_t bulk_body = 2 * sealed::header_size + 20 + sealed::tag_size;
  w.bytes[bulk_body + 5000] ^= 0x01;
  auto r = reader_of(w.bytes, 4096);
  std::vector<uint8_t> control(20), ram(w.pages.size());
  ASSERT_TRUE(read_fully(*r, control.data(), control.size(), false));
  auto ok = read_fully(*r, ram.data(), ram.size(), true);
  ASSERT_FALSE(ok);
  EXPECT_TRUE(says(ok.error(), "failed authentication")) << describe(ok.error());
}

TEST(sealed_stream, wrong_keys_open_nothing) {
  const auto w = sealed_wire(4096);
  auto [c, d] = make_loopback_pair();
  std::vector<uint8_t> copy = w.bytes;
  iovec v{copy.data(), copy.size()};
  ASSERT_TRUE(c->write_all(std::span<iovec>{&v, 1}));
  auto r = tls_stream::with_keys(std::move(d), b_to_a, b_to_a);
  ASSERT_TRUE(r);
  uint8_t b = 0;
  auto got = (*r)->read_some(&b, 1);
  ASSERT_FALSE(got);
  EXPECT_TRUE(says(got.error(), "failed authentication"));
}

TEST(sealed_stream, page_data_read_as_control_mid_record_is_refused) {
  const auto w = sealed_wire(size_t{4} * 4096);
  auto r = reader_of(w.bytes);
  std::vector<uint8_t> control(20), ram(100);
  ASSERT_TRUE(read_fully(*r, control.data(), control.size(), false));
  ASSERT_TRUE(read_fully(*r, ram.data(), ram.size(), true));
  uint8_t b = 0;
  auto got = r->read_some(&b, 1);
  ASSERT_FALSE(got);
  EXPECT_TRUE(says(got.error(), "page data where a control record was due"));
}

TEST(sealed_stream, a_stream_cut_mid_record_or_a_forged_header_is_an_error) {
  const auto w = sealed_wire(size_t{4} * 4096);
  for (const size_t cut : {size_t{3}, size_t{30}, w.bytes.size() - 1}) {
    auto r = reader_of({w.bytes.begin(), w.bytes.begin() + static_cast<ptrdiff_t>(cut)});
    std::vector<uint8_t> all(20 + w.pages.size() + 5);
    EXPECT_FALSE(read_fully(*r, all.data(), 20, false) &&
                 read_fully(*r, all.data() + 20, w.pages.size(), true) &&
                 read_fully(*r, all.data() + 20 + w.pages.size(), 5, false))
      << "cut at " << cut;
  }
  auto forged = sealed::encode_header({kind::control, 64});
  forged[7] = 0xff; // a length far past max_record
  auto r = reader_of({forged.begin(), forged.end()});
  uint8_t b = 0;
  auto got = r->read_some(&b, 1);
  ASSERT_FALSE(got);
  EXPECT_TRUE(says(got.error(), "allowed")) << describe(got.error());
}

} // namespace
} // namespace ferry
