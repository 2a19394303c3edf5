#include "agent/daemon/relay_policy.hpp"

#include "agent/transport/migration_address.hpp"

#include <boost/json.hpp>

#include <algorithm>
#include <iterator>

namespace ferry {

namespace {

namespace json = boost::json;

// The orchestrator's whole vocabulary: inventory and progress queries, the
// migration itself on both sides, its parameters, the escalation ladder's
// dirty-rate tools and postcopy switch, postcopy recovery, resuming a
// source that takes its guest back, a COLO pair's status and failover, and
// snapshots of the guest's disk as jobs (which name node names, never
// paths).
constexpr std::string_view allowed[] = {
  "calc-dirty-rate",
  "cancel-vcpu-dirty-limit",
  "cont",
  "job-dismiss",
  "migrate",
  "migrate-incoming",
  "migrate-pause",
  "migrate-recover",
  "migrate-set-capabilities",
  "migrate-set-parameters",
  "migrate-start-postcopy",
  "migrate_cancel",
  "query-dirty-rate",
  "query-jobs",
  "query-migrate",
  "query-migrate-capabilities",
  "query-migrate-parameters",
  "query-colo-status",
  "query-status",
  "query-vcpu-dirty-limit",
  "set-vcpu-dirty-limit",
  "snapshot-delete",
  "snapshot-load",
  "snapshot-save",
  "x-colo-lost-heartbeat",
};

// A migration may only go to or come from a TCP address: every other
// transport names a path or a program on this host.
std::optional<std::string> check_address(std::string_view command, const json::object& a) {
  const auto target = parse_migration_target(a.if_contains("uri"), a.if_contains("channels"));
  if (const auto* err = std::get_if<std::string>(&target))
    return std::string{command} + ": " + *err;
  const auto& addr = std::get<migration_address>(target);
  if (addr.type != migration_address::kind::tcp)
    return std::string{command} + " to '" + addr.describe() +
           "' is not relayed: cluster migrations use tcp: addresses only";
  return std::nullopt;
}

} // namespace

std::optional<std::string> relay_refusal(std::string_view command, const std::string& args) {
  if (std::find(std::begin(allowed), std::end(allowed), command) == std::end(allowed))
    return "'" + std::string{command} +
           "' is not relayed: the host agent forwards only the commands migrations need";
  if (command != "migrate" && command != "migrate-incoming" && command != "migrate-recover")
    return std::nullopt;
  boost::system::error_code ec;
  const auto v = json::parse(args, ec);
  if (ec || !v.is_object())
    return std::string{command} + ": arguments must be a JSON object";
  return check_address(command, v.as_object());
}

std::string relay_refusal_reply(const std::string& why) {
  return json::serialize(
    json::object{{"error", json::object{{"class", "GenericError"}, {"desc", why}}}});
}

} // namespace ferry
