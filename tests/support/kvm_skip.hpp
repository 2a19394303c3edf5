#pragma once
// Tests that need /dev/kvm call FERRY_REQUIRE_KVM() first: without KVM they
// are reported as skipped, with the reason, never as passed.

#include <cstdint>
#include <string>
#include <vector>

namespace ferry::test {
// Empty when KVM is usable, else why not.
std::string kvm_unavailable_reason();

// The accelerator flags for a test guest that needs no particular one: KVM
// where it is usable, else `-accel none` with the dirtier playing the test
// guest at `dirty_rate` pages per second — so migration, cancel and fault
// tests run on every machine and only tests of KVM itself skip.
std::vector<std::string> test_accel(uint64_t dirty_rate = 100000);
} // namespace ferry::test

#define FERRY_REQUIRE_KVM()                                                                        \
  do {                                                                                             \
    const auto ferry_kvm_reason = ::ferry::test::kvm_unavailable_reason();                         \
    if (!ferry_kvm_reason.empty())                                                                 \
      GTEST_SKIP() << "needs /dev/kvm: " << ferry_kvm_reason;                                      \
  } while (false)
