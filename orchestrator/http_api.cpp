#include "orchestrator/http_api.hpp"

#include "actors/metrics_endpoint.hpp"
#include "common/error.hpp"
#include "orchestrator/cluster.hpp"
#include "orchestrator/migration_job.hpp"
#include "orchestrator/orchestrator_error.hpp"

#include <caf/all.hpp>

#include <boost/beast/http/status.hpp>
#include <boost/json.hpp>

#include <atomic>
#include <charconv>
#include <thread>

namespace ferry {

namespace {

namespace http = boost::beast::http;
namespace json = boost::json;

constexpr auto api_timeout = std::chrono::seconds(15);

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
  return {s, json::serialize(json::object{{"error", desc}})};
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

std::optional<json::object> body_object(const std::string& body) {
  try {
    auto v = json::parse(body);
    if (v.is_object())
      return v.as_object();
  } catch (const std::exception&) {
  }
  return std::nullopt;
}

std::string member(const json::object& o, const char* key) {
  const auto* v = o.if_contains(key);
  return v != nullptr && v->is_string() ? std::string{v->as_string()} : std::string{};
}

reply route(caf::actor_system& sys, const cluster_api& cluster, const http_request& req) {
  const std::string& target = req.target;
  const std::string prefix = "/api/v1/";
  if (target.rfind(prefix, 0) != 0)
    return error_reply(http::status::not_found, "no such resource: " + target);
  const std::string path = target.substr(prefix.size());
  if (req.method == "GET") {
    if (path == "hosts" || path == "guests" || path == "migrations" || path == "evacuations")
      return ask(sys, cluster, api_get_atom::value, path);
    return error_reply(http::status::not_found, "no such resource: " + target);
  }
  if (req.method != "POST")
    return error_reply(http::status::method_not_allowed, "use GET or POST");
  if (path == "migrations") {
    auto o = body_object(req.body);
    if (!o || member(*o, "guest").empty())
      return error_reply(http::status::bad_request,
                         "expected a JSON object {\"guest\": NAME, \"to\": HOST}");
    return ask(sys, cluster, api_migrate_atom::value, member(*o, "guest"), member(*o, "to"));
  }
  if (path == "guests") {
    auto o = body_object(req.body);
    if (!o || member(*o, "host").empty() || !o->contains("spec"))
      return error_reply(http::status::bad_request,
                         "expected a JSON object {\"host\": HOST, \"spec\": {...}}");
    return ask(sys, cluster, api_create_atom::value, member(*o, "host"),
               json::serialize(o->at("spec")));
  }
  if (path == "evacuations") {
    auto o = body_object(req.body);
    if (!o || member(*o, "host").empty())
      return error_reply(http::status::bad_request, "expected a JSON object {\"host\": HOST}");
    return ask(sys, cluster, api_evacuate_atom::value, member(*o, "host"));
  }
  const std::string mig = "migrations/";
  const std::string suffix = "/cancel";
  if (path.rfind(mig, 0) == 0 && path.size() > mig.size() + suffix.size() &&
      path.compare(path.size() - suffix.size(), suffix.size(), suffix) == 0) {
    const std::string id_text = path.substr(mig.size(), path.size() - mig.size() - suffix.size());
    int64_t id = 0;
    auto [end, ec] = std::from_chars(id_text.data(), id_text.data() + id_text.size(), id);
    if (ec != std::errc{} || end != id_text.data() + id_text.size())
      return error_reply(http::status::bad_request, "'" + id_text + "' is not a migration id");
    return ask(sys, cluster, cancel_atom::value, id);
  }
  return error_reply(http::status::not_found, "no such resource: " + target);
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
                                                           api_tokens tokens) {
  return http_server::start(
    at,
    [&sys, cluster = std::move(cluster), tokens = std::move(tokens)](const http_request& req) {
      if (auto no = authorize(tokens.caller(req.authorization), req.method))
        return http_response{no->status, "application/json", std::move(no->body), {}};
      return handle(sys, cluster, req);
    },
    "http-api", "http-conn");
}

} // namespace ferry
