#pragma once
// A Ferry cluster of real processes for integration tests: N ferry-agent
// daemons (mutual TLS from deploy/pki/ferry-pki.sh), ferry-orchestrator and
// ferryctl, all in one temporary directory. Where this process may (root,
// iproute2; not with FERRY_TEST_NO_NETNS set), each agent runs in its own
// network namespace with two links — control and metrics on one bridge,
// migration streams on another — so all traffic crosses real interfaces; otherwise all share
// loopback. Ports and subnets are picked per test process so that tests may run in parallel.

#include "tests/support/process.hpp"
#include "tests/support/temp_dir.hpp"

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace ferry::test {

class test_cluster {
public:
  test_cluster() = default;
  ~test_cluster();
  test_cluster(const test_cluster&) = delete;
  test_cluster& operator=(const test_cluster&) = delete;

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
  // The address host's agent listens on (its namespace's, or 127.0.0.1).
  std::string address(const std::string& host) const;
  bool in_namespaces() const { return !net_tag_.empty(); }
  // Resets every TCP connection on host's migration address (ss -K: the
  // kernel aborts them and sends the peers a reset). Namespaces only.
  bool reset_migration_connections(const std::string& host);
  // The host dies: its agent and every guest it runs are killed at once.
  void kill_host(const std::string& host);
  // Stops host's agent with `sig` and starts it again on the same control
  // port (its guests keep running). Returns an error text, empty on success.
  std::string restart_agent(const std::string& host, int sig);
  // Takes host's link (its veth on the bridge) down or up again: with it
  // down, everything to and from the host is silently dropped, as when a
  // switch port dies. Namespaces only; false if `ip` failed.
  bool set_link(const std::string& host, bool up);
  // The same for the host's link on the migration network only (its
  // migration address): migration streams go silent, control stays up.
  bool set_migration_link(const std::string& host, bool up);
  // Where host's agent receives migrations (its migration network's
  // address, or 127.0.0.1).
  std::string migration_address(const std::string& host) const;

  temp_dir dir;
  std::vector<std::string> hosts;
  std::map<std::string, std::unique_ptr<process>> agents;
  std::unique_ptr<process> orchestrator;
  // Extra environment (VAR=value) for the daemons, set before start().
  std::vector<std::string> agent_env;
  std::vector<std::string> orchestrator_env;
  uint16_t api_port = 0;
  // API tokens (the orchestrator's tokens file has both); ctl() uses the
  // operator's. The files hold just the token, as ferryctl --token-file reads.
  std::string operator_token, viewer_token;
  std::string operator_token_file() const { return dir.file("operator.token"); }
  std::string viewer_token_file() const { return dir.file("viewer.token"); }
  // More ferryctl options for ctl() (e.g. --ca once the API speaks HTTPS).
  std::vector<std::string> ctl_options;

private:
  bool make_namespaces();
  void kill_guests(const std::string& host) const;
  // host's namespace index (NET_TAG-<i>), without namespaces none.
  std::optional<size_t> namespace_of(const std::string& host) const;
  bool set_veth(const std::string& host, const char* side, bool up);
  std::string net_tag_;          // non-empty: namespaces NET_TAG-<i> on bridge NET_TAG-br
  std::string subnet_;           // "10.A.B."
  std::string ip_;               // iproute2's ip
  std::string migration_subnet_; // "10.C.B.": the migration network
  std::map<std::string, std::vector<std::string>> agent_argv_;
};

} // namespace ferry::test
