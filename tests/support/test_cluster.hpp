#pragma once
// A Ferry cluster of real processes for integration tests: N ferry-agent
// daemons (mutual TLS from deploy/pki/ferry-pki.sh), ferry-orchestrator and
// ferryctl, all in one temporary directory. Ports are picked per test
// process so that tests may run in parallel.

#include "tests/support/process.hpp"
#include "tests/support/temp_dir.hpp"

#include <map>
#include <memory>
#include <string>
#include <vector>

namespace ferry::test {

class test_cluster {
public:
  // Starts the agents and the orchestrator; `policy` is extra TOML for the
  // orchestrator's [policy] table. Returns an error text, empty on success.
  std::string start(const std::vector<std::string>& hosts, const std::string& policy = {});
  // (Re)starts the orchestrator and waits until every agent is connected.
  std::string start_orchestrator();

  // ferryctl against this cluster's orchestrator.
  run_result ctl(std::vector<std::string> args) const;
  // Where each guest runs, from the `ferry-agent vm` processes themselves
  // (a guest's QMP socket lies in its host's run directory); also checks
  // that the orchestrator's inventory agrees.
  std::map<std::string, std::vector<std::string>> placements() const;
  // The jobs, the orchestrator's and agents' stderr: for failed tests.
  std::string story() const;

  std::string run_dir(const std::string& host) const { return dir.file(host + "-run"); }
  std::string journal_path() const { return dir.file("journal.db"); }
  // Where the host's agent serves GET /metrics (the orchestrator's is on
  // api_port).
  uint16_t metrics_port(const std::string& host) const;

  temp_dir dir;
  std::vector<std::string> hosts;
  std::map<std::string, std::unique_ptr<process>> agents;
  std::unique_ptr<process> orchestrator;
  uint16_t api_port = 0;
};

} // namespace ferry::test
