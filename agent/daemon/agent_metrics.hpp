#pragma once
// What ferry-agent's GET /metrics says (every name documented in
// docs/metrics.md): the host's capacity and guest counts, and per guest its
// run state and every figure of its last query-migrate (MigrationStats and
// the rest of MigrationInfo), the migration parameters the figures are
// judged against (downtime-limit, max-bandwidth) and its last calc-dirty-rate.

#include "actors/guest_spec.hpp"

#include <boost/json/object.hpp>

#include <string>
#include <vector>

namespace ferry {

struct guest_metrics_input {
  guest_info info;
  bool answered = false;          // its monitor replied to this scrape's queries
  boost::json::object status;     // query-status "return"
  boost::json::object migrate;    // query-migrate "return"
  boost::json::object parameters; // query-migrate-parameters "return"
  boost::json::object dirty_rate; // query-dirty-rate "return"
};

struct agent_metrics_input {
  host_capacity capacity;
  std::vector<guest_metrics_input> guests;
};

// Prometheus text format 0.0.4.
std::string render_agent_metrics(const agent_metrics_input& in);

// The QMP commands each guest is asked per scrape, in the order the
// fields of guest_metrics_input take their answers.
inline constexpr const char* guest_metrics_queries[] = {
  "query-status", "query-migrate", "query-migrate-parameters", "query-dirty-rate"};

} // namespace ferry
