#pragma once
// ferry-agent's daemon-mode configuration (`ferry-agent --config agent.toml`).
// deploy/examples/agent.toml is the annotated example of the file format;
// docs/security.md says what the [tls] and [paths] settings protect.

#include "actors/host_port.hpp"
#include "actors/tls_identity.hpp"
#include "agent/daemon/path_confinement.hpp"

#include <caf/expected.hpp>

#include <cstdint>
#include <optional>
#include <string>

namespace ferry {

struct daemon_config {
  std::string host_name;
  host_port control;     // where the host actor is published (CAF over TLS)
  tls_identity tls;      // cluster CA and this host's certificate and key
  std::string state_dir; // the agent's own files (created at start)
  std::string run_dir;   // QMP sockets, serial and log files of the guests
  // Where guest boot images and RAM files may be (paths.images, paths.memory;
  // default STATE_DIR/images and STATE_DIR/memory).
  guest_path_policy guest_paths;
  std::optional<host_port> metrics; // GET /metrics served here (none: not served)
  std::string migration_address;    // how other hosts reach this host's migration ports
  // The CA that issued the other hosts' certificates (migration.ca): guests
  // migrate over TLS with this host's certificate, trusting only it.
  std::string migration_ca;
  // Not read from the file: where the daemon prepared the guests' migration
  // TLS directory at start (migration_credentials); empty = guests get none.
  std::string migration_tls_dir;
  uint16_t migration_port_min = 49152;
  uint16_t migration_port_max = 49215;
  uint64_t memory = 0; // bytes offered to guests (0: the host's MemTotal)
};

// Parses TOML text; `origin` names it in error messages.
caf::expected<daemon_config> parse_daemon_config(const std::string& text,
                                                 const std::string& origin);
caf::expected<daemon_config> load_daemon_config(const std::string& path);

} // namespace ferry
