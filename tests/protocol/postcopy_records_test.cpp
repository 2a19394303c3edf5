// Postcopy's records: what each encoder writes its decoder reads back, and
// every way a hostile peer could point outside RAM is refused.
#include "protocol/migration_stream.hpp"
#include "protocol/page_digest.hpp"
#include "protocol/postcopy_records.hpp"

#include <gtest/gtest.h>

#include <vector>

namespace mig = ferry::mig;

namespace {

std::string why(const caf::error& e) {
  return e ? caf::to_string(e) : std::string{};
}

} // namespace

TEST(postcopy_records, page_request_round_trips_and_stays_inside_ram) {
  const auto bytes = mig::encode(mig::page_request{190, 10});
  auto r = mig::decode_page_request(bytes, 200);
  ASSERT_TRUE(r) << why(r.error());
  EXPECT_EQ(r->pfn, 190U);
  EXPECT_EQ(r->count, 10U);
  EXPECT_FALSE(mig::decode_page_request(bytes, 199)) << "page 199 is past RAM of 199 pages";
  EXPECT_FALSE(mig::decode_page_request(mig::encode(mig::page_request{5, 0}), 200));
  EXPECT_FALSE(
    mig::decode_page_request(mig::encode(mig::page_request{0, mig::max_postcopy_pages + 1}), 200));
  // A count that wraps the address space round to the start.
  EXPECT_FALSE(mig::decode_page_request(mig::encode(mig::page_request{~uint64_t{0}, 2}), 200));
  auto shorter = bytes;
  shorter.pop_back();
  EXPECT_FALSE(mig::decode_page_request(shorter, 200));
  auto reserved = bytes;
  reserved.back() = 1;
  EXPECT_FALSE(mig::decode_page_request(reserved, 200));
}

TEST(postcopy_records, discard_names_only_pages_inside_ram) {
  const std::vector<uint64_t> words{0x8000000000000001ull, 0xff};
  const auto bytes = mig::encode_discard(128, words);
  auto d = mig::decode_discard(bytes, 200); // pages 128..199: 72 pages, 8 in the second word
  ASSERT_TRUE(d) << why(d.error());
  EXPECT_EQ(d->first_pfn, 128U);
  ASSERT_EQ(d->word_count, 2U);
  EXPECT_EQ(d->word(0), words[0]);
  EXPECT_EQ(d->word(1), words[1]);
  // Page 200 (bit 8 of the second word) is past the end.
  EXPECT_FALSE(mig::decode_discard(mig::encode_discard(128, std::vector<uint64_t>{0, 0x100}), 200));
  // A third word lies wholly past it, even empty... with a bit set.
  EXPECT_FALSE(mig::decode_discard(mig::encode_discard(128, std::vector<uint64_t>{0, 0, 1}), 200));
  EXPECT_FALSE(mig::decode_discard(mig::encode_discard(100, std::vector<uint64_t>{1}), 200))
    << "a start off a word boundary";
  EXPECT_FALSE(mig::decode_discard(mig::encode_discard(256, std::vector<uint64_t>{1}), 200));
  EXPECT_FALSE(mig::decode_discard(mig::encode_discard(0, std::vector<uint64_t>{}), 200));
  auto cut = bytes;
  cut.resize(cut.size() - 8);
  EXPECT_FALSE(mig::decode_discard(cut, 200)) << "fewer words than it says";
}

TEST(postcopy_records, page_batch_head_carries_indexes_hashes_and_zero_pages) {
  std::vector<uint8_t> page(mig::page_size, 0x5a);
  const std::vector<mig::postcopy_page> pages{
    {3, false, mig::page_hash(page.data())}, {7, true, 0}, {9, false, 0x1234}};
  std::vector<uint8_t> head;
  mig::encode_postcopy_head(head, pages);
  auto size = mig::postcopy_head_size(head);
  ASSERT_TRUE(size);
  EXPECT_EQ(*size, head.size());
  const size_t payload = head.size() + 2 * size_t{mig::page_size};
  auto b = mig::decode_postcopy_head(head, payload, 64);
  ASSERT_TRUE(b) << why(b.error());
  ASSERT_EQ(b->count, 3U);
  EXPECT_EQ(b->data_pages, 2U);
  EXPECT_EQ(b->pages[0].pfn, 3U);
  EXPECT_EQ(b->pages[0].hash, mig::page_hash(page.data()));
  EXPECT_TRUE(b->pages[1].zero);
  EXPECT_EQ(b->pages[1].pfn, 7U);
  EXPECT_EQ(b->pages[2].hash, 0x1234U);
  EXPECT_FALSE(mig::decode_postcopy_head(head, payload - 1, 64)) << "data shorter than two pages";
  EXPECT_FALSE(mig::decode_postcopy_head(head, payload, 9)) << "page 9 outside 9 pages";
}

TEST(postcopy_records, page_batch_refuses_twice_the_same_page_and_oversize_counts) {
  std::vector<uint8_t> head;
  const std::vector<mig::postcopy_page> twice{{5, true, 0}, {5, true, 0}};
  mig::encode_postcopy_head(head, twice);
  auto b = mig::decode_postcopy_head(head, head.size(), 64);
  ASSERT_FALSE(b);
  EXPECT_NE(why(b.error()).find("twice"), std::string::npos) << why(b.error());
  std::vector<mig::postcopy_page> many(mig::max_postcopy_pages + 1);
  for (size_t i = 0; i < many.size(); ++i)
    many[i] = {i, true, 0};
  mig::encode_postcopy_head(head, many);
  EXPECT_FALSE(mig::postcopy_head_size(head));
  mig::encode_postcopy_head(head, {});
  EXPECT_FALSE(mig::postcopy_head_size(head)) << "an empty batch";
}

TEST(postcopy_records, postcopy_run_carries_the_awaited_count) {
  auto n = mig::decode_postcopy_run(mig::encode_postcopy_run(12345));
  ASSERT_TRUE(n);
  EXPECT_EQ(*n, 12345U);
  EXPECT_FALSE(mig::decode_postcopy_run(std::vector<uint8_t>(7)));
}

TEST(postcopy_records, new_record_types_have_names_and_pass_the_header_check) {
  for (auto t :
       {mig::record_type::discard, mig::record_type::postcopy_run, mig::record_type::postcopy_pages,
        mig::record_type::page_request, mig::record_type::postcopy_received}) {
    const auto h = mig::encode_header(t, 16, 0);
    auto d = mig::decode_header(h);
    ASSERT_TRUE(d) << mig::to_string(t);
    EXPECT_EQ(d->type, t);
    EXPECT_STRNE(mig::to_string(t), "unknown");
  }
  const auto beyond = mig::encode_header(
    static_cast<mig::record_type>(static_cast<uint32_t>(mig::last_record_type) + 1), 0, 0);
  EXPECT_FALSE(mig::decode_header(beyond));
}
