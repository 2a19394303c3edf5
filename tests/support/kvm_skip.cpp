#include "tests/support/kvm_skip.hpp"

#include "agent/vmm/kvm/kvm_vm.hpp"
#include "common/error.hpp"

namespace ferry::test {

std::string kvm_unavailable_reason() {
  auto ok = kvm_available();
  return ok ? std::string{} : describe(ok.error());
}

std::vector<std::string> test_accel(uint64_t dirty_rate) {
  if (kvm_unavailable_reason().empty())
    return {"-accel", "kvm"};
  return {"-accel", "none,dirty-rate=" + std::to_string(dirty_rate)};
}

} // namespace ferry::test
