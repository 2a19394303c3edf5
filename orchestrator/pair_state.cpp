#include "orchestrator/pair_state.hpp"

#include <algorithm>
#include <array>

namespace ferry {

namespace {

using ps = pair_state;

constexpr std::array<std::string_view, 6> names{"protecting",  "protected",     "failing-over",
                                                "unprotected", "re-protecting", "ended"};

} // namespace

const std::vector<pair_transition>& pair_transitions() {
  // A secondary lost while protected leaves the primary running alone:
  // unprotected straight away. Protecting and re-protecting that fail leave
  // the guest where it runs, unprotected. Unprotect ends a pair from any
  // state but failing-over, which first settles which copy runs.
  static const std::vector<pair_transition> table{
    {ps::protecting, ps::protected_},     {ps::protecting, ps::unprotected},
    {ps::protecting, ps::ended},          {ps::protected_, ps::failing_over},
    {ps::protected_, ps::unprotected},    {ps::protected_, ps::ended},
    {ps::failing_over, ps::unprotected},  {ps::unprotected, ps::re_protecting},
    {ps::unprotected, ps::ended},         {ps::re_protecting, ps::protected_},
    {ps::re_protecting, ps::unprotected}, {ps::re_protecting, ps::ended},
  };
  return table;
}

bool pair_can_move(pair_state from, pair_state to) {
  const auto& t = pair_transitions();
  return std::any_of(t.begin(), t.end(),
                     [&](const pair_transition& e) { return e.from == from && e.to == to; });
}

std::string_view to_string(pair_state s) {
  return names.at(static_cast<size_t>(s));
}

std::optional<pair_state> pair_state_from_string(std::string_view s) {
  for (size_t i = 0; i < names.size(); ++i)
    if (names[i] == s)
      return static_cast<pair_state>(i);
  return std::nullopt;
}

const std::vector<pair_state>& all_pair_states() {
  static const std::vector<pair_state> all{ps::protecting,  ps::protected_,    ps::failing_over,
                                           ps::unprotected, ps::re_protecting, ps::ended};
  return all;
}

} // namespace ferry
