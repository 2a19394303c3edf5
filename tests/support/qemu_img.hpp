#pragma once
// qemu-img from Debian's qemu-utils: the tests' oracle for qcow2 images
// (and their maker). Tests that need it skip with the reason when it is
// not installed.

#include "tests/support/process.hpp"

#include <gtest/gtest.h>

#include <unistd.h>

#include <string>
#include <vector>

namespace ferry::test {

inline const std::string qemu_img_path = "/usr/bin/qemu-img";

inline bool have_qemu_img() {
  return ::access(qemu_img_path.c_str(), X_OK) == 0;
}

// Runs `qemu-img ARGS`, expecting it to succeed; its output.
inline std::string qemu_img(std::vector<std::string> args) {
  args.insert(args.begin(), qemu_img_path);
  auto r = run(args);
  EXPECT_EQ(r.status, 0) << r.output;
  return r.output;
}

} // namespace ferry::test
