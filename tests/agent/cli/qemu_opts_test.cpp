#include "agent/cli/qemu_opts.hpp"
#include "common/error.hpp"

#include <gtest/gtest.h>

using namespace ferry;

TEST(qemu_opts, implied_key_pairs_and_escaped_commas) {
  auto o = qemu_opts::parse("memory-backend-file,id=ram0,mem-path=/a,,b,share=on", "qom-type");
  ASSERT_TRUE(o) << describe(o.error());
  EXPECT_EQ(o->get("qom-type"), "memory-backend-file");
  EXPECT_EQ(o->get("mem-path"), "/a,b");
  EXPECT_EQ(o->get_bool("share", false), true);
  EXPECT_FALSE(o->has("size"));
}

TEST(qemu_opts, bare_key_means_on) {
  auto o = qemu_opts::parse("unix:/x,server,nowait", "addr");
  ASSERT_TRUE(o);
  EXPECT_EQ(o->get("server"), "on");
  EXPECT_EQ(o->get("nowait"), "on");
}

TEST(qemu_opts, errors_name_the_parameter) {
  struct bad_case {
    const char* text;
    const char* fragment;
  };
  for (const auto& c : std::vector<bad_case>{{"a=1,a=2", "duplicate parameter 'a'"},
                                             {"=5", "missing parameter name"},
                                             {"a=1,,,", "empty element"}}) {
    auto o = qemu_opts::parse(c.text);
    ASSERT_FALSE(o) << c.text;
    EXPECT_NE(describe(o.error()).find(c.fragment), std::string::npos)
      << c.text << ": " << describe(o.error());
  }
  auto o = qemu_opts::parse("x=1,y=2");
  ASSERT_TRUE(o);
  auto only = o->only({"x"});
  ASSERT_FALSE(only);
  EXPECT_EQ(describe(only.error()), "Invalid parameter 'y'");
  auto esc = qemu_opts::parse("a=1,,");
  ASSERT_TRUE(esc);
  EXPECT_EQ(esc->get("a"), "1,") << "a doubled comma is a literal comma";
  auto b = qemu_opts::parse("share=maybe");
  EXPECT_FALSE(b->get_bool("share", false));
}

TEST(qemu_opts, sizes_and_numbers) {
  EXPECT_EQ(parse_size("4096"), 4096U);
  EXPECT_EQ(parse_size("4k"), 4096U);
  EXPECT_EQ(parse_size("256M"), 256U << 20);
  EXPECT_EQ(parse_size("1G"), 1U << 30);
  EXPECT_EQ(parse_size("2T"), uint64_t{2} << 40);
  EXPECT_EQ(parse_size("512", 1 << 20), 512U << 20) << "-m defaults to MiB";
  EXPECT_FALSE(parse_size(""));
  EXPECT_FALSE(parse_size("12Q"));
  EXPECT_FALSE(parse_size("M"));
  EXPECT_FALSE(parse_size("99999999999999999999"));
  EXPECT_FALSE(parse_size("20000000T"));
  EXPECT_EQ(parse_uint("0x10"), 16U);
  EXPECT_FALSE(parse_uint("-1"));
  EXPECT_FALSE(parse_uint("18446744073709551616"));
}
