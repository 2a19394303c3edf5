#include "agent/daemon/daemon_config.hpp"

#include "actors/config_reader.hpp"
#include "agent/cli/qemu_opts.hpp"
#include "common/error.hpp"

namespace ferry {

namespace {

caf::error invalid(const std::string& msg) {
  return make_ferry_error(errc::invalid_argument, msg);
}

caf::expected<daemon_config> read(const config_reader& r) {
  daemon_config c;
  FERRY_TRY(host, r.str("host"));
  if (host.empty())
    return r.invalid("'host' must not be empty");
  c.host_name = host;
  FERRY_TRY(control, r.address("control.listen"));
  c.control = control;
  FERRY_TRY(tls, r.tls());
  c.tls = tls;
  FERRY_TRY(state, r.str("paths.state_dir"));
  FERRY_TRY(run, r.str("paths.run_dir"));
  c.state_dir = state;
  c.run_dir = run;
  FERRY_TRY(images, r.strings("paths.images", {state + "/images"}));
  FERRY_TRY(memory, r.strings("paths.memory", {state + "/memory"}));
  for (const auto* dirs : {&images, &memory})
    for (const auto& d : *dirs)
      if (d.empty() || d[0] != '/')
        return r.invalid("paths.images and paths.memory take absolute directories, not '" + d +
                         "'");
  c.guest_paths = {images, memory};
  FERRY_TRY(metrics, r.str("metrics.listen", ""));
  if (!metrics.empty()) {
    FERRY_TRY(at, r.address("metrics.listen"));
    c.metrics = at;
  }
  FERRY_TRY(maddr, r.str("migration.address", "127.0.0.1"));
  c.migration_address = maddr;
  // Cluster migrations run TLS between hosts: no CA, no start.
  FERRY_TRY(mca, r.str("migration.ca"));
  if (mca.empty())
    return r.invalid("'migration.ca' must name the PEM file of the CA that issued the hosts' "
                     "certificates (hosts-ca.pem)");
  c.migration_ca = mca;
  FERRY_TRY(pmin, r.integer("migration.port_min", c.migration_port_min));
  FERRY_TRY(pmax, r.integer("migration.port_max", c.migration_port_max));
  if (pmin < 1 || pmax > 65535 || pmin > pmax)
    return r.invalid("migration ports must satisfy 1 <= port_min <= port_max <= 65535");
  c.migration_port_min = static_cast<uint16_t>(pmin);
  c.migration_port_max = static_cast<uint16_t>(pmax);
  FERRY_TRY(mem, r.str("capacity.memory", "0"));
  FERRY_TRY(bytes, parse_size(mem, 1));
  c.memory = bytes;
  return c;
}

} // namespace

caf::expected<daemon_config> parse_daemon_config(const std::string& text,
                                                 const std::string& origin) {
  FERRY_TRY(r, config_reader::parse(text, origin, invalid));
  return read(r);
}

caf::expected<daemon_config> load_daemon_config(const std::string& path) {
  FERRY_TRY(r, config_reader::load(path, invalid));
  return read(r);
}

} // namespace ferry
