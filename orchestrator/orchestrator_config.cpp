#include "orchestrator/orchestrator_config.hpp"

#include "actors/config_reader.hpp"
#include "common/error.hpp"
#include "orchestrator/orchestrator_error.hpp"

#include <boost/asio/ip/address.hpp>

#include <limits>
#include <set>

namespace ferry {

namespace {

caf::error invalid(const std::string& msg) {
  return make_orchestrator_error(orchestrator_errc::invalid_request, msg);
}

// Overwrites `out` with the non-negative integer at `key`, if present.
template <class T>
caf::expected<void> count_into(const config_reader& r, const char* key, T& out) {
  FERRY_TRY(v, r.count(key, out));
  if constexpr (sizeof(T) < sizeof(uint64_t))
    if (v > std::numeric_limits<T>::max())
      return r.invalid(std::string{"'"} + key + "' is too large");
  out = static_cast<T>(v);
  return {};
}

caf::expected<migration_policy> read_policy(const config_reader& r) {
  migration_policy p;
  for (const auto& ok :
       {count_into(r, "policy.max_migrations", p.max_migrations),
        count_into(r, "policy.max_outbound_per_host", p.max_outbound_per_host),
        count_into(r, "policy.max_inbound_per_host", p.max_inbound_per_host),
        count_into(r, "policy.max_bandwidth", p.max_bandwidth),
        count_into(r, "policy.downtime_limit_ms", p.downtime_limit_ms),
        count_into(r, "policy.multifd_channels", p.multifd_channels),
        count_into(r, "policy.progress_timeout_s", p.progress_timeout_s),
        count_into(r, "policy.completion_timeout_s_per_gib", p.completion_timeout_s_per_gib),
        count_into(r, "policy.handover_timeout_ms", p.handover_timeout_ms),
        count_into(r, "policy.evacuation_attempts", p.evacuation_attempts),
        count_into(r, "policy.source_return_s", p.source_return_s),
        count_into(r, "policy.escalate_after_passes", p.escalate_after_passes),
        count_into(r, "policy.downtime_steps", p.downtime_steps),
        count_into(r, "policy.dirty_limit_mib_s", p.dirty_limit_mib_s),
        count_into(r, "policy.max_postcopy_bandwidth", p.max_postcopy_bandwidth),
        count_into(r, "policy.postcopy_recover_backoff_max_s", p.postcopy_recover_backoff_max_s)})
    if (!ok)
      return ok.error();
  FERRY_TRY(tls, r.boolean("policy.migration_tls", p.migration_tls));
  p.migration_tls = tls;
  FERRY_TRY(converge, r.boolean("policy.auto_converge_step", p.auto_converge_step));
  p.auto_converge_step = converge;
  FERRY_TRY(limit_step, r.boolean("policy.dirty_limit_step", p.dirty_limit_step));
  p.dirty_limit_step = limit_step;
  FERRY_TRY(postcopy, r.boolean("policy.postcopy_step", p.postcopy_step));
  p.postcopy_step = postcopy;
  FERRY_TRY(preempt, r.boolean("policy.postcopy_preempt", p.postcopy_preempt));
  p.postcopy_preempt = preempt;
  FERRY_TRY(ahead, r.boolean("policy.prepare_ahead", p.prepare_ahead));
  p.prepare_ahead = ahead;
  if (p.dirty_limit_mib_s == 0)
    return r.invalid("policy.dirty_limit_mib_s must be at least 1");
  if (p.postcopy_recover_backoff_max_s == 0)
    return r.invalid("policy.postcopy_recover_backoff_max_s must be at least 1");
  if (p.escalate_after_passes == 0)
    return r.invalid("policy.escalate_after_passes must be at least 1");
  if (p.max_migrations == 0 || p.max_outbound_per_host == 0 || p.max_inbound_per_host == 0)
    return r.invalid("concurrency limits must be at least 1");
  return p;
}

bool is_loopback(const std::string& host) {
  if (host == "localhost")
    return true;
  boost::system::error_code ec;
  const auto addr = boost::asio::ip::make_address(host, ec);
  return !ec && addr.is_loopback();
}

// [http] cert/key (HTTPS) and client_ca (client certificates). An API that
// can be reached from other machines carries tokens and guest specs: it is
// served in clear only on loopback.
caf::expected<std::optional<http_tls>> read_api_tls(const config_reader& r, const host_port& at) {
  http_tls t;
  FERRY_TRY(cert, r.str("http.cert", ""));
  FERRY_TRY(key, r.str("http.key", ""));
  FERRY_TRY(client_ca, r.str("http.client_ca", ""));
  t.cert = cert;
  t.key = key;
  t.client_ca = client_ca;
  if (t.cert.empty() != t.key.empty())
    return r.invalid("HTTPS needs both 'http.cert' and 'http.key'");
  if (t.cert.empty() && !t.client_ca.empty())
    return r.invalid("'http.client_ca' needs HTTPS: set 'http.cert' and 'http.key' too");
  if (t.cert.empty() && !is_loopback(at.host))
    return r.invalid("the API listens on " + at.host +
                     ", which other machines can reach: serve HTTPS ('http.cert' and "
                     "'http.key', e.g. orchestrator-cert.pem from ferry-pki.sh) or listen on "
                     "loopback");
  if (t.cert.empty())
    return std::optional<http_tls>{};
  return std::optional<http_tls>{t};
}

caf::expected<orchestrator_config> read(const config_reader& r) {
  orchestrator_config c;
  FERRY_TRY(http, r.address("http.listen"));
  c.http = http;
  FERRY_TRY(api_tls, read_api_tls(r, http));
  c.https = api_tls;
  // The API changes the cluster: nobody uses it without credentials.
  FERRY_TRY(tokens, r.str("http.tokens", ""));
  c.http_tokens = tokens;
  if (tokens.empty() && (!c.https || c.https->client_ca.empty()))
    return r.invalid("name who may use the API: 'http.tokens' (ROLE NAME TOKEN per line) "
                     "and/or 'http.client_ca' (operator and viewer certificates, over HTTPS)");
  FERRY_TRY(metrics, r.str("metrics.listen", ""));
  if (!metrics.empty()) {
    FERRY_TRY(at, r.address("metrics.listen"));
    c.metrics = at;
  }
  FERRY_TRY(journal, r.str("journal.path"));
  c.journal_path = journal;
  FERRY_TRY(tls, r.tls());
  c.tls = tls;
  FERRY_TRY(agents, r.tables("agents"));
  if (agents.empty())
    return r.invalid("at least one [[agents]] entry (name, address) is needed");
  std::set<std::string> names;
  for (const auto& a : agents) {
    agent_address ag;
    FERRY_TRY(name, a.str("name"));
    FERRY_TRY(control, a.address("address"));
    ag.name = name;
    ag.control = control;
    if (!names.insert(ag.name).second)
      return r.invalid("agent '" + ag.name + "' is listed twice");
    c.agents.push_back(std::move(ag));
  }
  FERRY_TRY(policy, read_policy(r));
  c.policy = policy;
  return c;
}

} // namespace

caf::expected<orchestrator_config> parse_orchestrator_config(const std::string& text,
                                                             const std::string& origin) {
  FERRY_TRY(r, config_reader::parse(text, origin, invalid));
  return read(r);
}

caf::expected<orchestrator_config> load_orchestrator_config(const std::string& path) {
  FERRY_TRY(r, config_reader::load(path, invalid));
  return read(r);
}

} // namespace ferry
