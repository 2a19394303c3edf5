#pragma once
// Test-only faults of a COLO pair, FERRY_FAULT_COLO=KIND:N in an agent's
// environment; the number N (checkpoint, 0: never) if KIND is set:
//   die-mid-checkpoint (primary) — the process dies in checkpoint N with
//     its pages on the wire and its CPU state not (the secondary must go on
//     from N-1);
//   bad-message (primary) — checkpoint N's vmstate-send names another
//     checkpoint (the secondary must refuse it; the primary runs on);
//   diverge (secondary, compare mode) — the output of its run from
//     checkpoint N is sent with one byte changed (the primary must
//     checkpoint at once).
//   slow-checkpoint (primary) — checkpoint N holds the guest paused for a
//     second (what a loaded host does for a moment: query-status must say
//     "colo", not "paused").

#include <cstdint>
#include <cstdlib>
#include <string_view>

namespace ferry {

inline uint64_t colo_fault(std::string_view kind) {
  const char* env = std::getenv("FERRY_FAULT_COLO");
  if (env == nullptr)
    return 0;
  const std::string_view spec{env};
  if (spec.size() <= kind.size() || spec.substr(0, kind.size()) != kind || spec[kind.size()] != ':')
    return 0;
  return static_cast<uint64_t>(std::strtoull(env + kind.size() + 1, nullptr, 10));
}

} // namespace ferry
