#pragma once
// Errors of ferry-orchestrator. Values are pinned: they travel inside
// caf::error and must never be reused. `describe()` (agent/agent_error.hpp)
// renders any of them.

#include <caf/error.hpp>
#include <caf/make_message.hpp>

#include <cstdint>
#include <string>

namespace ferry {

enum class orchestrator_errc : uint8_t {
  invalid_request = 1, // an API caller asked for something impossible
  journal = 2,         // SQLite failed
  host_down = 3,       // the agent is not connected
  conflict = 4,        // the guest is already being moved, or the host is draining
};

} // namespace ferry

CAF_ERROR_CODE_ENUM(ferry::orchestrator_errc, "ferry_orch")

namespace ferry {

inline caf::error make_orchestrator_error(orchestrator_errc code, std::string desc) {
  return caf::make_error(code, std::move(desc));
}

} // namespace ferry
