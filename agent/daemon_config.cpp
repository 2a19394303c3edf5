#include "agent/daemon_config.hpp"

#include "agent/agent_error.hpp"
#include "agent/qemu_opts.hpp"

#include <toml++/toml.h>

#include <fstream>
#include <sstream>

namespace ferry {

namespace {

caf::error invalid(const std::string& msg) {
  return make_agent_error(agent_errc::invalid_argument, msg);
}

// A TOML lookup that names the missing or mistyped key in its error.
class reader {
public:
  reader(const toml::table& t, std::string origin) : t_(t), origin_(std::move(origin)) {}

  caf::expected<std::string> str(std::string_view path, const char* fallback = nullptr) {
    auto node = t_.at_path(path);
    if (!node) {
      if (fallback != nullptr)
        return std::string{fallback};
      return invalid(origin_ + ": missing '" + std::string{path} + "'");
    }
    if (auto v = node.value<std::string>())
      return *v;
    return invalid(origin_ + ": '" + std::string{path} + "' must be a string");
  }

  caf::expected<int64_t> integer(std::string_view path, int64_t fallback) {
    auto node = t_.at_path(path);
    if (!node)
      return fallback;
    if (auto v = node.value<int64_t>())
      return *v;
    return invalid(origin_ + ": '" + std::string{path} + "' must be an integer");
  }

  const std::string& origin() const { return origin_; }

private:
  const toml::table& t_;
  std::string origin_;
};

} // namespace

caf::expected<daemon_config> parse_daemon_config(const std::string& text,
                                                 const std::string& origin) {
  toml::table t;
  try {
    t = toml::parse(text, origin);
  } catch (const toml::parse_error& e) {
    std::ostringstream where;
    where << e.source().begin;
    return invalid(origin + ":" + where.str() + ": " + std::string{e.description()});
  }
  reader r{t, origin};
  daemon_config c;
  FERRY_TRY(host, r.str("host"));
  if (host.empty())
    return invalid(origin + ": 'host' must not be empty");
  c.host_name = host;
  FERRY_TRY(control, r.str("control.listen"));
  auto ep = parse_host_port(control);
  if (!ep)
    return invalid(origin + ": control.listen '" + control + "' is not HOST:PORT");
  c.control = *ep;
  FERRY_TRY(ca, r.str("tls.ca"));
  FERRY_TRY(cert, r.str("tls.cert"));
  FERRY_TRY(key, r.str("tls.key"));
  c.ca_file = ca;
  c.cert_file = cert;
  c.key_file = key;
  FERRY_TRY(state, r.str("paths.state_dir"));
  FERRY_TRY(run, r.str("paths.run_dir"));
  c.state_dir = state;
  c.run_dir = run;
  FERRY_TRY(metrics, r.str("metrics.listen", ""));
  c.metrics_listen = metrics;
  FERRY_TRY(maddr, r.str("migration.address", "127.0.0.1"));
  c.migration_address = maddr;
  FERRY_TRY(pmin, r.integer("migration.port_min", c.migration_port_min));
  FERRY_TRY(pmax, r.integer("migration.port_max", c.migration_port_max));
  if (pmin < 1 || pmax > 65535 || pmin > pmax)
    return invalid(origin + ": migration ports must satisfy 1 <= port_min <= port_max <= 65535");
  c.migration_port_min = static_cast<uint16_t>(pmin);
  c.migration_port_max = static_cast<uint16_t>(pmax);
  FERRY_TRY(mem, r.str("capacity.memory", "0"));
  FERRY_TRY(bytes, parse_size(mem, 1));
  c.memory = bytes;
  return c;
}

caf::expected<daemon_config> load_daemon_config(const std::string& path) {
  std::ifstream in{path};
  if (!in)
    return invalid("cannot read config '" + path + "'");
  std::stringstream ss;
  ss << in.rdbuf();
  return parse_daemon_config(ss.str(), path);
}

} // namespace ferry
