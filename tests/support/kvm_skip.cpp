#include "tests/support/kvm_skip.hpp"

#include "agent/agent_error.hpp"
#include "agent/kvm_vm.hpp"

namespace ferry::test {

std::string kvm_unavailable_reason() {
  auto ok = kvm_available();
  return ok ? std::string{} : describe(ok.error());
}

} // namespace ferry::test
