// libFuzzer: vCPU state blobs arrive from the migration stream (untrusted);
// deserialize must reject garbage cleanly, and accept only what it can write.

#include "agent/vmm/kvm/vcpu_state.hpp"

#include <cstdlib>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto st = ferry::vcpu_state::deserialize({data, size});
  if (st) {
    // Whatever parses must serialize back to the very same bytes.
    const auto again = st->serialize();
    if (again.size() != size || !std::equal(again.begin(), again.end(), data))
      std::abort();
  }
  return 0;
}
