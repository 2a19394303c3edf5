#include "agent/daemon/daemon.hpp"

#include "actors/control_node.hpp"
#include "actors/identity_proof.hpp"
#include "actors/metrics_endpoint.hpp"
#include "agent/daemon/daemon_config.hpp"
#include "agent/daemon/host_actor.hpp"
#include "agent/daemon/migration_credentials.hpp"
#include "common/error.hpp"
#include "common/log.hpp"

#include <caf/all.hpp>
#include <caf/openssl/all.hpp>

#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <fstream>

namespace ferry {

namespace {

int fail(const std::string& msg) {
  std::fprintf(stderr, "ferry-agent: %s\n", msg.c_str());
  return 1;
}

bool make_dir(const std::string& path) {
  return ::mkdir(path.c_str(), 0750) == 0 || errno == EEXIST;
}

} // namespace

int run_daemon(const std::string& config_path, const std::string& exe) {
  log::init("ferry-agent");
  auto cfg = load_daemon_config(config_path);
  if (!cfg)
    return fail(describe(cfg.error()));
  if (!make_dir(cfg->state_dir) || !make_dir(cfg->run_dir))
    return fail("cannot create state_dir '" + cfg->state_dir + "' or run_dir '" + cfg->run_dir +
                "'");
  auto me = identity::own_identity(cfg->tls, "host");
  if (!me)
    return fail(describe(me.error()));
  if (*me != cfg->host_name)
    return fail("tls.cert '" + cfg->tls.cert_file + "' names host '" + *me +
                "', but this agent is host '" + cfg->host_name + "'");
  auto tls_dir = prepare_migration_credentials(*cfg);
  if (!tls_dir)
    return fail(describe(tls_dir.error()));
  cfg->migration_tls_dir = *tls_dir;
  const stop_signals stop; // before CAF starts its threads: they inherit the mask
  caf::actor_system_config sys_cfg;
  configure_control_plane(sys_cfg, cfg->tls);
  caf::actor_system sys{sys_cfg};

  auto host = spawn_host_actor(sys, *cfg, exe);
  auto port = caf::openssl::publish(host, cfg->control.port, cfg->control.host.c_str(), true);
  if (!port) {
    caf::anon_send_exit(host, caf::exit_reason::user_shutdown);
    return fail("cannot publish the host actor on " + cfg->control.host + ":" +
                std::to_string(cfg->control.port) + ": " + sys.render(port.error()));
  }
  // Tests and scripts that asked for port 0 read the real one from here.
  std::ofstream{cfg->run_dir + "/control.port"} << *port << "\n";
  std::printf("ferry-agent: host %s serving on %s:%u\n", cfg->host_name.c_str(),
              cfg->control.host.c_str(), static_cast<unsigned>(*port));

  std::unique_ptr<http_server> metrics;
  if (cfg->metrics) {
    auto srv = http_server::start(*cfg->metrics,
                                  metrics_only_handler(sys, caf::actor_cast<metrics_source>(host)),
                                  "metrics-http", "metrics-conn");
    if (!srv) {
      caf::anon_send_exit(host, caf::exit_reason::user_shutdown);
      return fail("cannot serve metrics: " + describe(srv.error()));
    }
    metrics = std::move(*srv);
    std::ofstream{cfg->run_dir + "/metrics.port"} << metrics->port() << "\n";
    std::printf("ferry-agent: metrics on http://%s:%u/metrics\n", cfg->metrics->host.c_str(),
                static_cast<unsigned>(metrics->port()));
  }
  std::fflush(stdout);
  notify_service_manager("READY=1\nSTATUS=host " + cfg->host_name + " serving");

  const int sig = stop.wait();
  notify_service_manager("STOPPING=1");
  metrics.reset();
  std::printf("ferry-agent: host %s stopping (signal %d); its guests keep running\n",
              cfg->host_name.c_str(), sig);
  caf::anon_send_exit(host, caf::exit_reason::user_shutdown);
  return 0;
}

} // namespace ferry
