// The monitor's COLO commands: query-colo-status and x-colo-lost-heartbeat
// (the pair itself runs in the migration engines: source_colo.cpp,
// destination_colo.cpp).
#include "agent/qmp/qmp_monitor.hpp"

#include "agent/qmp/qmp_args.hpp"

#include <boost/json.hpp>

namespace ferry {

namespace json = boost::json;
using qmp_args::empty;
using qmp_args::generic;

qmp_result qmp_monitor::query_colo_status(const json::object&) {
  const auto s = migration_.colo_status();
  return json::value(
    json::object{{"mode", s.mode}, {"last-mode", s.last_mode}, {"reason", s.reason}});
}

qmp_result qmp_monitor::x_colo_lost_heartbeat(const json::object&) {
  if (auto why = migration_.colo_lost_heartbeat())
    return generic(std::move(*why));
  return empty();
}

} // namespace ferry
