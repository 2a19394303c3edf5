#pragma once
// Tests that need /dev/kvm call FERRY_REQUIRE_KVM() first: without KVM they
// are reported as skipped, with the reason, never as passed.

#include <string>

namespace ferry::test {
// Empty when KVM is usable, else why not.
std::string kvm_unavailable_reason();
} // namespace ferry::test

#define FERRY_REQUIRE_KVM()                                                                        \
  do {                                                                                             \
    const auto ferry_kvm_reason = ::ferry::test::kvm_unavailable_reason();                         \
    if (!ferry_kvm_reason.empty())                                                                 \
      GTEST_SKIP() << "needs /dev/kvm: " << ferry_kvm_reason;                                      \
  } while (false)
