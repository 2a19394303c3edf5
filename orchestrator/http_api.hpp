#pragma once
// ferry-orchestrator's HTTP/JSON API (Boost.Beast), served on its own named
// threads ("http-api" accepts, "http-conn" per connection) so that no actor
// blocks on a socket. Each request becomes one message to the cluster actor.
//
//   GET  /api/v1/hosts | guests | migrations | evacuations
//   POST /api/v1/guests                {"host": HOST, "spec": {name, memory, ...}}
//   POST /api/v1/migrations            {"guest": NAME, "to": HOST (optional)}
//   POST /api/v1/migrations/ID/cancel
//   POST /api/v1/evacuations           {"host": HOST}
//   GET  /api/v1/events                server-sent events: "migrations" snapshots
// Errors: 400 bad request, 404 unknown resource, 409 conflict, 503 host down,
// each with {"error": description}.

#include "actors/host_port.hpp"

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>
#include <caf/expected.hpp>

#include <cstdint>
#include <memory>

namespace ferry {

class http_api {
public:
  // Binds `at` (port 0: any) and starts serving.
  static caf::expected<std::unique_ptr<http_api>> start(caf::actor_system& sys, caf::actor cluster,
                                                        const host_port& at);
  ~http_api();
  http_api(const http_api&) = delete;
  http_api& operator=(const http_api&) = delete;
  uint16_t port() const;

  struct impl;

private:
  explicit http_api(std::unique_ptr<impl> p);
  std::unique_ptr<impl> impl_;
};

} // namespace ferry
