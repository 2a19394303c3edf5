// Guest files from a spec must resolve inside the directories the agent
// allows: symlinks and ".." that climb out, relative paths and missing
// files are refused with the reason; allowed paths come back resolved.

#include "agent/daemon/path_confinement.hpp"
#include "common/error.hpp"
#include "tests/support/temp_dir.hpp"

#include <gtest/gtest.h>

#include <unistd.h>

#include <fstream>
#include <sys/stat.h>

namespace ferry {
namespace {

struct confinement : ::testing::Test {
  test::temp_dir tmp;
  std::string images = tmp.file("images");
  std::string memory = tmp.file("memory");
  std::string outside = tmp.file("outside");
  guest_path_policy policy{{images}, {memory}};

  void SetUp() override {
    for (const auto& d : {images, memory, outside})
      ASSERT_EQ(::mkdir(d.c_str(), 0700), 0);
    std::ofstream{images + "/boot.img"} << "x";
    std::ofstream{outside + "/secret"} << "x";
    ASSERT_EQ(::symlink((outside + "/secret").c_str(), (images + "/escape.img").c_str()), 0);
    ASSERT_EQ(::symlink(outside.c_str(), (memory + "/out").c_str()), 0);
  }

  std::string refusal(const std::string& drive, const std::string& mem) {
    guest_spec s;
    s.drive = drive;
    s.mem_path = mem;
    auto r = confine_guest_paths(s, policy);
    return r ? std::string{} : describe(r.error());
  }
};

TEST_F(confinement, allowed_paths_come_back_resolved) {
  guest_spec s;
  s.drive = images + "/../images/./boot.img";
  s.mem_path = memory + "/vm1.ram"; // not there yet: the guest creates it
  auto r = confine_guest_paths(s, policy);
  ASSERT_TRUE(r) << describe(r.error());
  EXPECT_EQ(r->drive.substr(r->drive.size() - 16), "/images/boot.img");
  EXPECT_EQ(r->drive.find(".."), std::string::npos);
  EXPECT_EQ(r->mem_path.substr(r->mem_path.size() - 15), "/memory/vm1.ram");
  EXPECT_TRUE(refusal("", "").empty()) << "no files, nothing to check";
}

TEST_F(confinement, escapes_are_refused_with_the_reason) {
  auto why = refusal("/etc/passwd", "");
  EXPECT_NE(why.find("drive '/etc/passwd' is outside the directories this agent allows "
                     "(paths.images: " +
                     images + ")"),
            std::string::npos)
    << why;
  why = refusal(images + "/escape.img", "");
  EXPECT_NE(why.find("resolves to"), std::string::npos) << "a symlink out is followed: " << why;
  EXPECT_NE(refusal(images + "/../outside/secret", "").find("outside the directories"),
            std::string::npos);
  EXPECT_NE(refusal("", memory + "/out/new.ram").find("paths.memory"), std::string::npos)
    << "a new file under a symlinked directory that leaves";
  EXPECT_NE(refusal("", images + "/x.ram").find("paths.memory"), std::string::npos)
    << "an image directory is not a memory directory";
  EXPECT_NE(refusal("boot.img", "").find("must be an absolute path"), std::string::npos);
  EXPECT_NE(refusal(images + "/missing.img", "").find("No such file"), std::string::npos);
  EXPECT_NE(refusal("", memory + "/..").find("outside"), std::string::npos);
  EXPECT_NE(refusal(images, "").find("outside"), std::string::npos)
    << "the directory itself is not a file inside it";
  policy.memory.clear();
  EXPECT_NE(refusal("", memory + "/vm1.ram").find("none configured"), std::string::npos);
}

} // namespace
} // namespace ferry
