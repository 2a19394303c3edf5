// The daemons' logging path: one line per message, naming the program and
// the level; FERRY_LOG raises the threshold.

#include "common/log.hpp"

#include <gtest/gtest.h>

#include <cstdlib>

TEST(log, lines_name_the_program_and_the_level) {
  ::unsetenv("FERRY_LOG");
  ferry::log::init("ferry-test");
  ::testing::internal::CaptureStderr();
  ferry::log::info("host {} is up", "host-a");
  ferry::log::warn("removing orphaned target '{}'", "vm1");
  const std::string out = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(out.find("ferry-test "), std::string::npos) << out;
  EXPECT_NE(out.find(" info: host host-a is up\n"), std::string::npos) << out;
  EXPECT_NE(out.find(" warning: removing orphaned target 'vm1'\n"), std::string::npos) << out;
}

TEST(log, ferry_log_sets_the_threshold) {
  ::setenv("FERRY_LOG", "error", 1);
  ferry::log::init("ferry-test");
  ::testing::internal::CaptureStderr();
  ferry::log::info("not shown");
  ferry::log::error("shown");
  const std::string out = ::testing::internal::GetCapturedStderr();
  ::unsetenv("FERRY_LOG");
  EXPECT_EQ(out.find("not shown"), std::string::npos) << out;
  EXPECT_NE(out.find(" error: shown\n"), std::string::npos) << out;
}
