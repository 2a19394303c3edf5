#include "orchestrator/http_api.hpp"

#include "actors/host_interface.hpp"
#include "actors/metrics_endpoint.hpp"
#include "common/error.hpp"
#include "orchestrator/api_request.hpp"
#include "orchestrator/cluster.hpp"
#include "orchestrator/migration_job.hpp"
#include "orchestrator/orchestrator_error.hpp"

#include <caf/all.hpp>

#include <boost/beast/http/status.hpp>

#include <atomic>
#include <thread>
#include <type_traits>
#include <variant>

namespace ferry {

namespace {

namespace http = boost::beast::http;

// Longer than the slowest answer the cluster waits for (a guest's start), so
// that its reason, not a bare timeout, reaches the caller.
constexpr auto api_timeout = create_request_timeout + std::chrono::seconds(2);

http::status status_for(const caf::error& err) {
  if (err.category() == caf::atom("ferry_orch")) {
    switch (static_cast<orchestrator_errc>(err.code())) {
      case orchestrator_errc::invalid_request:
        return http::status::bad_request;
      case orchestrator_errc::conflict:
        return http::status::conflict;
      case orchestrator_errc::host_down:
        return http::status::service_unavailable;
      case orchestrator_errc::journal:
        return http::status::internal_server_error;
    }
  }
  return http::status::internal_server_error;
}

struct reply {
  http::status status = http::status::ok;
  std::string body;
};

reply error_reply(http::status s, const std::string& desc) {
  return {s, api::error_body(desc)};
}

// Sends one message to the cluster and waits for its JSON answer.
template <class... Ts>
reply ask(caf::actor_system& sys, const cluster_api& cluster, Ts&&... xs) {
  caf::scoped_actor self{sys};
  reply out;
  self->request(cluster, api_timeout, std::forward<Ts>(xs)...)
    .receive([&](const std::string& body) { out.body = body; },
             [&](const caf::error& err) { out = error_reply(status_for(err), describe(err)); });
  return out;
}

// Carries the request's command to the cluster and its answer back.
reply route(caf::actor_system& sys, const cluster_api& cluster, const http_request& req) {
  auto cmd = api::parse_request(req.method, req.target, req.body);
  return std::visit(
    [&](auto& c) -> reply {
      using T = std::decay_t<decltype(c)>;
      if constexpr (std::is_same_v<T, api::list>)
        return ask(sys, cluster, api_get_atom::value, c.what);
      else if constexpr (std::is_same_v<T, api::migrate>)
        return ask(sys, cluster, api_migrate_atom::value, c.guest, c.to);
      else if constexpr (std::is_same_v<T, api::create>)
        return ask(sys, cluster, api_create_atom::value, c.host, c.spec_json);
      else if constexpr (std::is_same_v<T, api::evacuate>)
        return ask(sys, cluster, api_evacuate_atom::value, c.host);
      else if constexpr (std::is_same_v<T, api::cancel>)
        return ask(sys, cluster, cancel_atom::value, c.id);
      else if constexpr (std::is_same_v<T, api::protect>)
        return ask(sys, cluster, api_protect_atom::value, c.guest, c.secondary);
      else if constexpr (std::is_same_v<T, api::unprotect>)
        return ask(sys, cluster, api_unprotect_atom::value, c.guest);
      else if constexpr (std::is_same_v<T, api::snapshot>)
        return ask(sys, cluster, api_snapshot_atom::value, c.guest, c.op, c.tag);
      else
        return reply{static_cast<http::status>(c.status), std::move(c.body)};
    },
    cmd);
}

// Server-sent events: a "migrations" snapshot whenever it changes, until the
// client goes away or the server stops.
void stream_events(caf::actor_system& sys, const cluster_api& cluster,
                   const http_stream_writer& write, const std::atomic<bool>& stopping) {
  std::string last;
  while (!stopping.load()) {
    auto r = ask(sys, cluster, api_get_atom::value, std::string{"migrations"});
    if (r.body != last) {
      last = r.body;
      if (!write("event: migrations\ndata: " + r.body + "\n\n"))
        return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
}

http_response handle(caf::actor_system& sys, const cluster_api& cluster, const http_request& req) {
  if (req.method == "GET" && req.target == "/api/v1/events") {
    http_response out;
    out.content_type = "text/event-stream";
    out.stream = [&sys, cluster](const http_stream_writer& write,
                                 const std::atomic<bool>& stopping) {
      stream_events(sys, cluster, write, stopping);
    };
    return out;
  }
  if (req.method == "GET" && req.target == "/metrics")
    return metrics_response(sys, cluster);
  auto r = route(sys, cluster, req);
  return {static_cast<unsigned>(r.status), "application/json", std::move(r.body), {}};
}

} // namespace

caf::expected<std::unique_ptr<http_server>> start_http_api(caf::actor_system& sys,
                                                           cluster_api cluster, const host_port& at,
                                                           const std::optional<http_tls>& tls,
                                                           api_tokens tokens) {
  return http_server::start(
    at,
    [&sys, cluster = std::move(cluster), tokens = std::move(tokens)](const http_request& req) {
      const auto who = request_caller(tokens, req.authorization, req.client_cert);
      if (auto no = authorize(who, req.method))
        return http_response{no->status, "application/json", std::move(no->body), {}};
      return handle(sys, cluster, req);
    },
    "http-api", "http-conn", http_limits{}, tls);
}

} // namespace ferry
