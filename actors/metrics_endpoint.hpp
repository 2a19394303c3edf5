#pragma once
// GET /metrics for a daemon: the answer of the actor that keeps its figures
// (it replies to (metrics_atom) with Prometheus text), asked from the HTTP
// connection's thread.

#include "actors/http_server.hpp"

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>

namespace ferry {

// 200 with the text, or 503 when `source` did not answer in time.
http_response metrics_response(caf::actor_system& sys, const caf::actor& source);

// An http_server handler that serves only GET /metrics (404 otherwise).
http_server::handler metrics_only_handler(caf::actor_system& sys, caf::actor source);

} // namespace ferry
