#pragma once
// The one state machine every migration job follows:
//   pending -> scheduling -> preparing-target -> running -> completing -> succeeded
// with failed / cancelled reachable from every non-final state.

#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

namespace ferry {

enum class job_state : uint8_t {
  pending,          // journaled, waiting for a slot under the concurrency limits
  scheduling,       // slot granted; source guest and target host checked
  preparing_target, // target guest created, migrate-incoming issued
  running,          // migrate issued; following query-migrate
  completing,       // source reported completed; target confirmed, source retired
  succeeded,
  failed,
  cancelled,
};

struct job_transition {
  job_state from;
  job_state to;
};

// Every allowed edge, in one table.
const std::vector<job_transition>& job_transitions();
bool job_can_move(job_state from, job_state to);
bool job_is_final(job_state s);
std::string_view to_string(job_state s);
std::optional<job_state> job_state_from_string(std::string_view s);
// Every state, in order.
const std::vector<job_state>& all_job_states();

} // namespace ferry
