// ferry-orchestrator --config orchestrator.toml: the cluster's control plane.
// Connects to every agent over CAF's TLS middleman, journals every migration
// step in SQLite, serves the HTTP/JSON API ferryctl talks to.

#include "actors/control_node.hpp"
#include "actors/identity_proof.hpp"
#include "actors/metrics_endpoint.hpp"
#include "common/error.hpp"
#include "common/log.hpp"
#include "orchestrator/cluster.hpp"
#include "orchestrator/http_api.hpp"
#include "orchestrator/journal.hpp"
#include "orchestrator/orchestrator_config.hpp"

#include <caf/all.hpp>

#include <cstdio>
#include <string>

namespace {

int fail(const std::string& msg) {
  std::fprintf(stderr, "ferry-orchestrator: %s\n", msg.c_str());
  return 1;
}

} // namespace

int main(int argc, char** argv) {
  using namespace ferry;
  log::init("ferry-orchestrator");
  const std::string usage = "usage: ferry-orchestrator --config orchestrator.toml\n";
  if (argc == 2 && (std::string{argv[1]} == "-h" || std::string{argv[1]} == "--help")) {
    std::fputs(usage.c_str(), stdout);
    return 0;
  }
  if (argc != 3 || std::string{argv[1]} != "--config")
    return fail("expected --config FILE\n" + usage);
  auto cfg = load_orchestrator_config(argv[2]);
  if (!cfg)
    return fail(describe(cfg.error()));
  if (auto me = identity::own_identity(cfg->tls, "orchestrator"); !me)
    return fail(describe(me.error()));
  caf::expected<api_tokens> tokens = api_tokens{};
  if (!cfg->http_tokens.empty())
    tokens = api_tokens::load(cfg->http_tokens);
  if (!tokens)
    return fail(describe(tokens.error()));
  auto log = journal::open(cfg->journal_path);
  if (!log)
    return fail(describe(log.error()));

  const stop_signals stop; // before CAF starts its threads: they inherit the mask
  caf::actor_system_config sys_cfg;
  configure_control_plane(sys_cfg, cfg->tls);
  caf::actor_system sys{sys_cfg};

  auto cluster = spawn_cluster(sys, *cfg, std::shared_ptr<journal>{std::move(*log)});
  auto api = start_http_api(sys, cluster, cfg->http, cfg->https, std::move(*tokens));
  if (!api) {
    caf::anon_send_exit(cluster, caf::exit_reason::user_shutdown);
    return fail(describe(api.error()));
  }
  std::printf("ferry-orchestrator: API on %s://%s:%u/api/v1/, %zu agents\n",
              cfg->https ? "https" : "http", cfg->http.host.c_str(),
              static_cast<unsigned>((*api)->port()), cfg->agents.size());
  // Read-only figures for Prometheus, apart from the API and its tokens.
  std::unique_ptr<http_server> metrics;
  if (cfg->metrics) {
    auto srv = http_server::start(
      *cfg->metrics, metrics_only_handler(sys, caf::actor_cast<metrics_source>(cluster)),
      "metrics-http", "metrics-conn");
    if (!srv) {
      api->reset();
      caf::anon_send_exit(cluster, caf::exit_reason::user_shutdown);
      return fail("cannot serve metrics: " + describe(srv.error()));
    }
    metrics = std::move(*srv);
    std::printf("ferry-orchestrator: metrics on http://%s:%u/metrics\n", cfg->metrics->host.c_str(),
                static_cast<unsigned>(metrics->port()));
  }
  std::fflush(stdout);
  notify_service_manager("READY=1\nSTATUS=serving " + std::to_string(cfg->agents.size()) +
                         " agents");
  (void) stop.wait();
  notify_service_manager("STOPPING=1");
  metrics.reset();
  api->reset();
  caf::anon_send_exit(cluster, caf::exit_reason::user_shutdown);
  return 0;
}
