#include "agent/testguest/guest_image.hpp"
#include "common/error.hpp"
#include "tests/support/temp_dir.hpp"
#include "tools/testguest/pattern_file.hpp"
#include "tools/testguest/verifier.hpp"

#include <gtest/gtest.h>

#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <iterator>

using namespace ferry::testguest;

TEST(guest_image, builtin_image_is_a_boot_sector_with_default_parameters) {
  auto img = builtin_image();
  ASSERT_EQ(img.size(), sector_bytes);
  EXPECT_EQ(img[510], 0x55);
  EXPECT_EQ(img[511], 0xaa);
  auto p = read_params(img);
  ASSERT_TRUE(p) << ferry::describe(p.error());
  EXPECT_EQ(*p, guest_params{}) << "assembly defaults match guest_params defaults";
}

TEST(guest_image, parameters_roundtrip) {
  auto img = builtin_image();
  std::vector<uint8_t> sector(img.begin(), img.end());
  guest_params p;
  p.ram_top = 256u << 20;
  p.ws_start = 8u << 20;
  p.ws_pages = 4096;
  p.pace = 17;
  p.seed = 0xdeadbeef;
  p.report_every = 3;
  ASSERT_TRUE(write_params(sector, p));
  EXPECT_EQ(read_params(sector), p);
  EXPECT_EQ(sector[510], 0x55) << "the signature survives";
}

TEST(guest_image, invalid_parameters_are_refused) {
  auto img = builtin_image();
  std::vector<uint8_t> sector(img.begin(), img.end());
  std::vector<guest_params> bad(6);
  bad[0].ram_top = 12345;
  bad[1].pattern_start = 4096;
  bad[2].ram_top = 0xff000000;
  bad[3].ws_pages = 100000;
  bad[4].ws_start = 0;
  bad[5].ram_top = bad[5].pattern_start;
  for (const auto& p : bad)
    EXPECT_FALSE(write_params(sector, p));
  std::vector<uint8_t> junk(512, 0);
  EXPECT_FALSE(read_params(junk));
  EXPECT_FALSE(read_params(std::span<const uint8_t>{junk.data(), 100}));
}

TEST(pattern_file, writes_a_sparse_file_the_verifier_accepts) {
  const ferry::test::temp_dir tmp;
  const std::string path = tmp.file("pattern.bin");
  guest_params p;
  p.ram_top = 32u << 20;
  auto img = builtin_image();
  std::vector<uint8_t> sector(img.begin(), img.end());
  ASSERT_TRUE(write_params(sector, p));
  ASSERT_TRUE(write_pattern_file(path, 40u << 20, p, sector));
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_size, 40 << 20);
  EXPECT_LT(static_cast<uint64_t>(st.st_blocks) * 512, uint64_t{30} << 20)
    << "zero-class pages are holes";
  std::ifstream in{path, std::ios::binary};
  std::vector<uint8_t> mem{std::istreambuf_iterator<char>(in), {}};
  auto r = verify(mem);
  EXPECT_TRUE(r.consistent) << r.summary();
}
