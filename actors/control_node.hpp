#pragma once
// What every control-plane daemon (ferry-agent --config, ferry-orchestrator)
// sets up the same way before it starts its actor system: who handles the
// stop signals, CAF's TLS middleman with the cluster's identities, and
// readiness reported to systemd.

#include "actors/tls_identity.hpp"

#include <caf/actor_system_config.hpp>

#include <signal.h>

#include <chrono>
#include <string>

namespace ferry {

// Blocks SIGINT and SIGTERM in the calling thread, so every thread started
// afterwards (CAF's, ours) inherits the mask and only wait() sees them; also
// ignores SIGPIPE (a vanished peer is an error value, not a signal).
// Construct it first thing in main, before any thread exists.
class stop_signals {
public:
  stop_signals();
  // Blocks until SIGINT or SIGTERM arrives; returns the signal.
  int wait() const;

private:
  sigset_t set_{};
};

// Loads CAF's middleman and openssl manager with `id` (both directions then
// demand a peer certificate issued by the CA: mutual TLS) and registers the
// control plane's message types.
// Control-plane heartbeats: one a second; five missed close the link.
inline constexpr std::chrono::milliseconds heartbeat_interval{1000};
inline constexpr int missed_heartbeats = 5;

void configure_control_plane(caf::actor_system_config& cfg, const tls_identity& id);

// Tells systemd how the service is doing (sd_notify(3)'s protocol, without
// libsystemd): "READY=1" once it serves, "STOPPING=1" when it winds down,
// "STATUS=..." for `systemctl status`. Does nothing when not started by a
// Type=notify unit (no $NOTIFY_SOCKET); false if the message was not sent.
bool notify_service_manager(const std::string& state);

} // namespace ferry
