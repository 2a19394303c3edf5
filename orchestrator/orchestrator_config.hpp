#pragma once
// ferry-orchestrator's configuration (`--config orchestrator.toml`, format in
// docs/orchestrator.md).

#include "actors/host_port.hpp"
#include "actors/http_server.hpp"
#include "actors/tls_identity.hpp"
#include "orchestrator/policy.hpp"

#include <caf/expected.hpp>

#include <optional>
#include <string>
#include <vector>

namespace ferry {

struct agent_address {
  std::string name; // the host name the agent reports
  host_port control;
};

struct orchestrator_config {
  host_port http;          // the HTTP/JSON API (ferryctl)
  std::string http_tokens; // who may use it (api_auth.hpp): [http] tokens ("": none)
  // HTTPS for the API ([http] cert, key, client_ca); required on any address
  // but loopback.
  std::optional<http_tls> https;
  // GET /metrics alone, without credentials (read-only): [metrics] listen.
  std::optional<host_port> metrics;
  std::string journal_path; // SQLite file
  tls_identity tls;         // cluster CA, and this orchestrator's identity
  std::vector<agent_address> agents;
  migration_policy policy;
};

caf::expected<orchestrator_config> parse_orchestrator_config(const std::string& text,
                                                             const std::string& origin);
caf::expected<orchestrator_config> load_orchestrator_config(const std::string& path);

} // namespace ferry
