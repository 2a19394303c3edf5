#pragma once
// GET /metrics for a daemon: the answer of the actor that keeps its figures
// (it replies to (metrics_atom) with Prometheus text), asked from the HTTP
// connection's thread.

#include "actors/host_interface.hpp"
#include "actors/http_server.hpp"

#include <caf/actor_system.hpp>
#include <caf/typed_actor.hpp>

namespace ferry {

// Whoever keeps a daemon's figures: the agent's host actor, the cluster.
using metrics_source = caf::typed_actor<caf::replies_to<metrics_atom>::with<std::string>>;

// 200 with the text, or 503 when `source` did not answer in time.
http_response metrics_response(caf::actor_system& sys, const metrics_source& source);

// An http_server handler that serves only GET /metrics (404 otherwise).
http_server::handler metrics_only_handler(caf::actor_system& sys, metrics_source source);

} // namespace ferry
