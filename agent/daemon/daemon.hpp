#pragma once
// `ferry-agent --config agent.toml`: the host agent of a Ferry cluster. Hosts
// any number of guests and publishes its host actor to the orchestrator over
// mutually authenticated TLS (caf::openssl with the cluster CA).

#include <string>

namespace ferry {

// Runs until SIGINT/SIGTERM; returns the process exit status.
int run_daemon(const std::string& config_path, const std::string& exe);

} // namespace ferry
