#pragma once
// ferry-agent's host actor in daemon mode: creates, lists and ends the host's
// guests (one `ferry-agent vm` process each) and relays QMP to them. Its
// handle is what the agent publishes to the orchestrator.

#include "actors/host_interface.hpp"
#include "agent/daemon/daemon_config.hpp"

#include <caf/actor_system.hpp>

namespace ferry {

// `exe` is the ferry-agent binary guests are started from.
host_actor spawn_host_actor(caf::actor_system& sys, daemon_config cfg, std::string exe);

} // namespace ferry
