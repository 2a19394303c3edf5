#include "orchestrator/orchestrator_config.hpp"

#include "orchestrator/orchestrator_error.hpp"

#include <toml++/toml.h>

#include <fstream>
#include <set>
#include <sstream>

namespace ferry {

namespace {

caf::error invalid(const std::string& msg) {
  return make_orchestrator_error(orchestrator_errc::invalid_request, msg);
}

caf::expected<std::string> str(const toml::node_view<const toml::node>& n, const std::string& what,
                               const std::string& origin) {
  if (auto v = n.value<std::string>())
    return *v;
  return invalid(origin + ": '" + what + "' must be a string");
}

caf::expected<host_port> address(const toml::node_view<const toml::node>& n,
                                 const std::string& what, const std::string& origin) {
  auto s = str(n, what, origin);
  if (!s)
    return s.error();
  auto hp = parse_host_port(*s);
  if (!hp)
    return invalid(origin + ": '" + what + "' = '" + *s + "' is not HOST:PORT");
  return *hp;
}

template <class T>
caf::expected<void> number(const toml::table& t, const char* key, T& out,
                           const std::string& origin) {
  auto n = t.at_path(std::string{"policy."} + key);
  if (!n)
    return {};
  auto v = n.value<int64_t>();
  if (!v || *v < 0)
    return invalid(origin + ": policy." + key + " must be a non-negative integer");
  out = static_cast<T>(*v);
  return {};
}

} // namespace

caf::expected<orchestrator_config> parse_orchestrator_config(const std::string& text,
                                                             const std::string& origin) {
  toml::table t;
  try {
    t = toml::parse(text, origin);
  } catch (const toml::parse_error& e) {
    std::ostringstream where;
    where << e.source().begin;
    return invalid(origin + ":" + where.str() + ": " + std::string{e.description()});
  }
  orchestrator_config c;
  const toml::table& ct = t;
  const toml::node& ct_node = ct;
  auto v = toml::node_view<const toml::node>{&ct_node};
  if (auto hp = address(v["http"]["listen"], "http.listen", origin); hp)
    c.http = *hp;
  else
    return hp.error();
  for (auto [key, out] :
       {std::pair{"journal.path", &c.journal_path}, std::pair{"tls.ca", &c.ca_file},
        std::pair{"tls.cert", &c.cert_file}, std::pair{"tls.key", &c.key_file}}) {
    auto s = str(ct.at_path(key), key, origin);
    if (!s)
      return s.error();
    *out = *s;
  }
  const auto* agents = ct.get_as<toml::array>("agents");
  if (agents == nullptr || agents->empty())
    return invalid(origin + ": at least one [[agents]] entry (name, address) is needed");
  std::set<std::string> names;
  for (const auto& a : *agents) {
    const auto* at = a.as_table();
    if (at == nullptr)
      return invalid(origin + ": [[agents]] entries must be tables");
    const toml::node* at_node = at;
    auto av = toml::node_view<const toml::node>{at_node};
    agent_address ag;
    auto n = str(av["name"], "agents.name", origin);
    if (!n)
      return n.error();
    ag.name = *n;
    auto hp = address(av["address"], "agents.address", origin);
    if (!hp)
      return hp.error();
    ag.control = *hp;
    if (!names.insert(ag.name).second)
      return invalid(origin + ": agent '" + ag.name + "' is listed twice");
    c.agents.push_back(std::move(ag));
  }
  auto& p = c.policy;
  for (const auto& ok :
       {number(ct, "max_migrations", p.max_migrations, origin),
        number(ct, "max_outbound_per_host", p.max_outbound_per_host, origin),
        number(ct, "max_inbound_per_host", p.max_inbound_per_host, origin),
        number(ct, "max_bandwidth", p.max_bandwidth, origin),
        number(ct, "downtime_limit_ms", p.downtime_limit_ms, origin),
        number(ct, "multifd_channels", p.multifd_channels, origin),
        number(ct, "progress_timeout_s", p.progress_timeout_s, origin),
        number(ct, "completion_timeout_s_per_gib", p.completion_timeout_s_per_gib, origin),
        number(ct, "evacuation_attempts", p.evacuation_attempts, origin)})
    if (!ok)
      return ok.error();
  if (auto n = ct.at_path("policy.auto_converge_step"); n) {
    auto b = n.value<bool>();
    if (!b)
      return invalid(origin + ": policy.auto_converge_step must be true or false");
    p.auto_converge_step = *b;
  }
  if (p.escalate_after_passes == 0)
    return invalid(origin + ": policy.escalate_after_passes must be at least 1");
  if (p.max_migrations == 0 || p.max_outbound_per_host == 0 || p.max_inbound_per_host == 0)
    return invalid(origin + ": concurrency limits must be at least 1");
  return c;
}

caf::expected<orchestrator_config> load_orchestrator_config(const std::string& path) {
  std::ifstream in{path};
  if (!in)
    return invalid("cannot read config '" + path + "'");
  std::stringstream ss;
  ss << in.rdbuf();
  return parse_orchestrator_config(ss.str(), path);
}

} // namespace ferry
