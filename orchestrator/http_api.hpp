#pragma once
// ferry-orchestrator's HTTP/JSON API, served by an http_server on its own
// named threads ("http-api" accepts, "http-conn" per connection) so that no
// actor blocks on a socket. Each request becomes one message to the cluster
// actor.
//
//   GET  /api/v1/hosts | guests | migrations | evacuations
//   POST /api/v1/guests                {"host": HOST, "spec": {name, memory, ...}}
//   POST /api/v1/migrations            {"guest": NAME, "to": HOST (optional)}
//   POST /api/v1/migrations/ID/cancel
//   POST /api/v1/evacuations           {"host": HOST}
//   GET  /api/v1/events                server-sent events: "migrations" snapshots
//   GET  /metrics                      Prometheus text format (docs/metrics.md)
// Every request needs credentials (api_auth.hpp): an operator's or viewer's
// client certificate (HTTPS) or `Authorization: Bearer TOKEN`; 401 without,
// 403 for a viewer's POST.
// Errors: 400 bad request, 401/403, 404 unknown resource, 409 conflict, 503
// host down or busy, each with {"error": description}.

#include "actors/http_server.hpp"
#include "orchestrator/api_auth.hpp"
#include "orchestrator/cluster.hpp"

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>
#include <caf/expected.hpp>

#include <memory>

namespace ferry {

// Serves the API (and GET /metrics) for `cluster` at `at` (port 0: any),
// over HTTPS with `tls`, to the callers `tokens` or the clients' CA know
// (viewers read, operators also change).
caf::expected<std::unique_ptr<http_server>> start_http_api(caf::actor_system& sys,
                                                           cluster_api cluster, const host_port& at,
                                                           const std::optional<http_tls>& tls,
                                                           api_tokens tokens);

} // namespace ferry
