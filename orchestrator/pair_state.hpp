#pragma once
// The state machine every COLO pair follows (docs/orchestrator.md, "COLO
// pairs"):
//   protecting -> protected -> failing-over -> unprotected -> re-protecting -> protected ...
// A pair is `ended` by unprotect; it stays unprotected while no host can
// take a secondary, and tries again.

#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

namespace ferry {

enum class pair_state : uint8_t {
  protecting,    // the secondary being created and given the first whole copy
  protected_,    // both sides in COLO: checkpoints flow
  failing_over,  // the primary lost: the survivor made the one running copy
  unprotected,   // one copy runs, no secondary
  re_protecting, // a new secondary being made on another host
  ended,         // unprotected by request: the pair is gone
};

struct pair_transition {
  pair_state from;
  pair_state to;
};

// Every allowed edge, in one table.
const std::vector<pair_transition>& pair_transitions();
bool pair_can_move(pair_state from, pair_state to);
std::string_view to_string(pair_state s);
std::optional<pair_state> pair_state_from_string(std::string_view s);
// Every state, in order.
const std::vector<pair_state>& all_pair_states();

} // namespace ferry
