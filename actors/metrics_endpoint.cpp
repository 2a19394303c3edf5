#include "actors/metrics_endpoint.hpp"

#include "actors/host_interface.hpp"
#include "protocol/prometheus_text.hpp"

#include <caf/all.hpp>

#include <chrono>

namespace ferry {

namespace {

// Prometheus' default scrape timeout is 10 s; answer (or give up) before.
constexpr auto metrics_timeout = std::chrono::seconds(8);

} // namespace

http_response metrics_response(caf::actor_system& sys, const metrics_source& source) {
  caf::scoped_actor self{sys};
  http_response out;
  self->request(source, metrics_timeout, metrics_atom::value)
    .receive(
      [&](const std::string& text) {
        out.content_type = std::string{prom::content_type};
        out.body = text;
      },
      [&](const caf::error& err) {
        out.status = 503;
        out.content_type = "text/plain";
        out.body = "metrics unavailable: " + sys.render(err) + "\n";
      });
  return out;
}

http_server::handler metrics_only_handler(caf::actor_system& sys, metrics_source source) {
  return [&sys, source = std::move(source)](const http_request& req) {
    if (req.method == "GET" && (req.target == "/metrics" || req.target.rfind("/metrics?", 0) == 0))
      return metrics_response(sys, source);
    return http_response{404, "text/plain", "only GET /metrics is served here\n", {}};
  };
}

} // namespace ferry
