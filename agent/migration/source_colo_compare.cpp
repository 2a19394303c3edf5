// A COLO primary in compare mode (x-ferry-colo output=compare, QEMU's
// colo-compare): the secondary runs from each checkpoint as well and sends
// its serial output; output both copies wrote alike goes out at once — a
// failover cannot take it back, as the survivor wrote the same — and a
// divergence asks for a checkpoint now, after which both run from the same
// state again.
#include "agent/migration/source_engine.hpp"

#include <algorithm>
#include <cstdio>

namespace ferry {

namespace {
// The secondary's output kept for comparison while this side's lags: past
// this it is a divergence (a checkpoint brings the two together again).
constexpr size_t compare_window = size_t{1} << 20;
} // namespace

caf::expected<void> migration_source::impl::colo_take_output(std::span<const uint8_t> payload) {
  FERRY_TRY(r, mig::decode_colo_output(payload));
  if (!plan.colo_compare || r.kind != mig::colo_output_kind::output)
    return make_ferry_error(errc::system_error,
                            "COLO: the secondary sent output records outside compare mode");
  // From a run a later checkpoint replaced (still in flight as it landed).
  if (r.checkpoint != colo_x.committed())
    return {};
  if (r.position != colo_sec_pos + colo_sec_out.size() ||
      colo_sec_out.size() + r.bytes.size() > compare_window) {
    colo_diverged = true;
    ++colo_divergences;
    colo_sec_out.clear();
    return {};
  }
  colo_sec_out.append(r.bytes.begin(), r.bytes.end());
  return colo_compare_output();
}

caf::expected<void> migration_source::impl::colo_compare_output() {
  serial_port* s = g.serial();
  if (s == nullptr || colo_sec_out.empty() || colo_diverged)
    return {};
  // What this side no longer holds went out already (a checkpoint).
  const uint64_t held_from = s->held_start();
  if (colo_sec_pos < held_from) {
    const auto skip =
      static_cast<size_t>(std::min<uint64_t>(held_from - colo_sec_pos, colo_sec_out.size()));
    colo_sec_out.erase(0, skip);
    colo_sec_pos += skip;
  }
  const std::string ours = s->held_from(colo_sec_pos);
  const size_t n = std::min(ours.size(), colo_sec_out.size());
  if (n == 0 || colo_sec_pos != held_from)
    return {};
  if (!std::equal(ours.begin(), ours.begin() + static_cast<std::ptrdiff_t>(n),
                  colo_sec_out.begin())) {
    std::fprintf(stderr, "ferry: COLO primary: output diverged at byte %llu: checkpoint now\n",
                 static_cast<unsigned long long>(colo_sec_pos));
    colo_diverged = true;
    ++colo_divergences;
    colo_sec_out.clear();
    return {};
  }
  colo_sec_out.erase(0, n);
  colo_sec_pos += n;
  colo_compared += n;
  // The secondary hears first how far the reader will have seen, then the
  // bytes go out: a primary that dies between the two leaves at most those
  // bytes unseen (as a checkpoint's release does), never shown twice.
  const mig::colo_output_record released{
    mig::colo_output_kind::released, colo_x.committed(), colo_sec_pos, {}};
  if (auto ok = channels[0]->send(mig::record_type::colo_output, mig::encode(released)); !ok)
    return ok;
  s->release(colo_sec_pos);
  return {};
}

} // namespace ferry
