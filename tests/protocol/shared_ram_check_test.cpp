// x-ignore-shared's shared-ram record: the sampled pages cover RAM from its
// first page to its last, what is encoded decodes back, and a hostile source
// cannot point outside RAM, repeat a page or overrun the payload.
#include "protocol/migration_stream.hpp"
#include "protocol/shared_ram_check.hpp"

#include <gtest/gtest.h>

#include <vector>

namespace mig = ferry::mig;

namespace {

std::string why(const caf::expected<std::vector<mig::shared_page_sample>>& r) {
  return r ? std::string{} : caf::to_string(r.error());
}

TEST(shared_ram_check, samples_span_ram_in_order_and_stay_bounded) {
  EXPECT_TRUE(mig::shared_sample_pages(0).empty());
  EXPECT_EQ(mig::shared_sample_pages(1), std::vector<uint64_t>{0});
  EXPECT_EQ(mig::shared_sample_pages(3), (std::vector<uint64_t>{0, 1, 2}));
  for (uint64_t pages : {uint64_t{1024}, uint64_t{1025}, uint64_t{262144}, uint64_t{1} << 40}) {
    const auto s = mig::shared_sample_pages(pages);
    ASSERT_EQ(s.size(), mig::max_shared_samples) << pages;
    EXPECT_EQ(s.front(), 0U);
    EXPECT_EQ(s.back(), pages - 1);
    for (size_t i = 1; i < s.size(); ++i)
      ASSERT_LT(s[i - 1], s[i]) << pages << " at " << i;
  }
}

TEST(shared_ram_check, round_trips) {
  const std::vector<mig::shared_page_sample> in{{0, 11}, {7, 22}, {4095, 33}};
  auto out = mig::decode_shared_ram(mig::encode_shared_ram(in), 4096);
  ASSERT_TRUE(out) << why(out);
  EXPECT_EQ(*out, in);
  const auto h = mig::decode_header(mig::encode_header(mig::record_type::shared_ram, 8, 0));
  ASSERT_TRUE(h);
  EXPECT_STREQ(mig::to_string(h->type), "shared-ram");
}

TEST(shared_ram_check, hostile_records_are_refused_with_the_reason) {
  const std::vector<mig::shared_page_sample> ok{{1, 1}, {2, 2}};
  auto bytes = mig::encode_shared_ram(ok);
  auto expect_refused = [](const std::vector<uint8_t>& b, uint64_t pages, const char* reason) {
    auto r = mig::decode_shared_ram(b, pages);
    ASSERT_FALSE(r) << reason;
    EXPECT_NE(why(r).find(reason), std::string::npos) << why(r);
  };
  expect_refused(std::vector<uint8_t>(4), 8, "4 bytes");
  expect_refused(mig::encode_shared_ram({}), 8, "sample count 0");
  auto many = bytes;
  many[0] = 0xff;
  many[1] = 0xff;
  expect_refused(many, 8, "sample count 65535");
  auto reserved = bytes;
  reserved[4] = 1;
  expect_refused(reserved, 8, "reserved");
  auto shorter = bytes;
  shorter.pop_back();
  expect_refused(shorter, 8, "39 bytes for 2 samples");
  expect_refused(bytes, 2, "page 2 outside RAM of 2 pages");
  expect_refused(mig::encode_shared_ram(std::vector<mig::shared_page_sample>{{3, 0}, {3, 0}}), 8,
                 "page 3 out of order");
}

} // namespace
