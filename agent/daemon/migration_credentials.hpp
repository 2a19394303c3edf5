#pragma once
// The directory every guest of this host migrates with (tls-creds-x509
// dir=): the hosts' CA from migration.ca and this host's own certificate and
// key, serving both endpoints (ferry-pki.sh issues host certificates for
// server and client use). Links, so a renewed certificate is picked up by
// the next migration without touching the guests.

#include "agent/daemon/daemon_config.hpp"

#include <caf/expected.hpp>

#include <string>

namespace ferry {

// STATE_DIR/migration-tls, made (again) from `cfg`; its path, or why not.
caf::expected<std::string> prepare_migration_credentials(const daemon_config& cfg);

} // namespace ferry
