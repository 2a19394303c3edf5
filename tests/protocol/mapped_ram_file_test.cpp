// The mapped-ram file's header: the layout puts every page at a fixed,
// aligned offset; what is written reads back; a file saved for another guest,
// a damaged header, a layout that does not fit the file and a bitmap naming
// pages past RAM are refused with the reason.
#include "protocol/mapped_ram_file.hpp"

#include <gtest/gtest.h>

#include <vector>

namespace mig = ferry::mig;

namespace {

template <class T>
std::string why(const caf::expected<T>& r) {
  return r ? std::string{} : caf::to_string(r.error());
}

TEST(mapped_ram_file, layout_is_aligned_in_order_and_about_the_size_of_ram) {
  for (uint64_t ram : {uint64_t{4096}, uint64_t{64} << 20, uint64_t{1} << 30, uint64_t{3} << 40}) {
    const auto l = mig::plan_mapped_ram(ram);
    EXPECT_EQ(l.bitmap_offset, mig::mapped_ram_block);
    EXPECT_EQ(l.pages_offset % mig::mapped_ram_pages_align, 0U);
    EXPECT_GE(l.pages_offset, l.bitmap_offset + l.bitmap_bytes());
    EXPECT_EQ(l.state_offset, l.pages_offset + ram);
    EXPECT_EQ(l.page_offset(1), l.pages_offset + 4096);
    EXPECT_LE(l.state_offset - ram, (uint64_t{2} << 20) + l.bitmap_bytes()) << ram;
  }
}

TEST(mapped_ram_file, the_header_reads_back) {
  const auto l = mig::plan_mapped_ram(64u << 20);
  const auto block = mig::encode_mapped_ram_header(l);
  ASSERT_EQ(block.size(), mig::mapped_ram_block);
  auto back = mig::decode_mapped_ram_header(block, 64u << 20, l.state_offset + 100);
  ASSERT_TRUE(back) << why(back);
  EXPECT_EQ(back->bitmap_offset, l.bitmap_offset);
  EXPECT_EQ(back->pages_offset, l.pages_offset);
  EXPECT_EQ(back->state_offset, l.state_offset);
}

TEST(mapped_ram_file, hostile_or_foreign_files_are_refused_with_the_reason) {
  const auto l = mig::plan_mapped_ram(64u << 20);
  const auto block = mig::encode_mapped_ram_header(l);
  const uint64_t file = l.state_offset + 100;
  auto refused = [&](const std::vector<uint8_t>& b, uint64_t ram, uint64_t size,
                     const char* reason) {
    auto r = mig::decode_mapped_ram_header(b, ram, size);
    ASSERT_FALSE(r) << reason;
    EXPECT_NE(why(r).find(reason), std::string::npos) << why(r);
  };
  refused(std::vector<uint8_t>(20), 64u << 20, file, "header of 20 bytes");
  refused(std::vector<uint8_t>(4096), 64u << 20, file, "no mapped-ram header");
  auto flipped = block;
  flipped[30] ^= 1;
  refused(flipped, 64u << 20, file, "checksum");
  refused(block, 128u << 20, file, "this guest has 134217728");
  refused(block, 64u << 20, l.state_offset, "does not fit a file of");
  refused(block, 64u << 20, 8192, "does not fit a file of");
  // A header re-signed with offsets that overlap or point past the file.
  auto forged = l;
  forged.pages_offset = l.bitmap_offset;
  refused(mig::encode_mapped_ram_header(forged), 64u << 20, file, "layout");
  forged = l;
  forged.state_offset = UINT64_MAX - 4095;
  refused(mig::encode_mapped_ram_header(forged), 64u << 20, file, "layout");
  forged = l;
  forged.bitmap_offset = UINT64_MAX - 4095;
  refused(mig::encode_mapped_ram_header(forged), 64u << 20, file, "layout");
}

TEST(mapped_ram_file, a_bitmap_bit_past_ram_is_refused) {
  auto l = mig::plan_mapped_ram(uint64_t{5} * 4096); // 5 pages: one byte, 3 spare bits
  std::vector<uint8_t> bits{0x1f};
  EXPECT_TRUE(mig::check_mapped_ram_bitmap(l, bits));
  bits[0] = 0x20;
  auto r = mig::check_mapped_ram_bitmap(l, bits);
  ASSERT_FALSE(r);
  EXPECT_NE(why(r).find("past the end of RAM"), std::string::npos);
  EXPECT_FALSE(mig::check_mapped_ram_bitmap(l, std::vector<uint8_t>(2)));
}

} // namespace
