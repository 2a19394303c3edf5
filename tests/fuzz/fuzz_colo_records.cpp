// libFuzzer: a COLO peer's records come from the network (either side may be
// hostile). The whole input is tried as a colo-output payload (refused, or
// encoded back to the same bytes); then it is a run of 16-byte colo payloads fed to one side's
// exchange: each must decode or be refused, encode back to the same bytes,
// and the exchange must keep its promises — a checkpoint committed only
// after its whole sequence, numbers only ever one more than the last.

#include "protocol/colo_records.hpp"

#include <cstdlib>
#include <cstring>

namespace mig = ferry::mig;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  (void) mig::decode_heartbeat({data, size < mig::heartbeat_size ? size : mig::heartbeat_size});
  // The whole input as a colo-output payload: refused, or read back whole.
  if (auto out = mig::decode_colo_output({data, size})) {
    const auto again = mig::encode(*out);
    if (again.size() != size || std::memcmp(again.data(), data, size) != 0)
      std::abort();
  }
  mig::colo_exchange x;
  for (size_t at = 0; at + mig::colo_record_size <= size; at += mig::colo_record_size) {
    const std::span<const uint8_t> p{data + at, mig::colo_record_size};
    auto r = mig::decode_colo(p);
    if (!r)
      continue;
    const auto again = mig::encode(*r);
    if (std::memcmp(again.data(), p.data(), p.size()) != 0)
      std::abort();
    const uint64_t before = x.committed();
    const auto step_before = x.step();
    if (!x.take(*r)) {
      if (x.step() != step_before || x.committed() != before)
        std::abort(); // a refusal changes nothing
      continue;
    }
    if (x.committed() != before) {
      if (r->message != mig::colo_message::vmstate_loaded || x.committed() != before + 1)
        std::abort();
    }
    if (x.committed() > x.checkpoint())
      std::abort();
  }
  return 0;
}
