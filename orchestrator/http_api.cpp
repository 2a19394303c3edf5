#include "orchestrator/http_api.hpp"

#include "agent/agent_error.hpp"
#include "orchestrator/cluster.hpp"
#include "orchestrator/migration_job.hpp"
#include "orchestrator/orchestrator_error.hpp"

#include <caf/all.hpp>

#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/json.hpp>

#include <pthread.h>
#include <sys/socket.h>

#include <atomic>
#include <charconv>
#include <thread>

namespace ferry {

namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace json = boost::json;
using tcp = boost::asio::ip::tcp;

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
reply ask(caf::actor_system& sys, const caf::actor& cluster, Ts&&... xs) {
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

reply route(caf::actor_system& sys, const caf::actor& cluster,
            const http::request<http::string_body>& req) {
  const std::string target{req.target()};
  const std::string prefix = "/api/v1/";
  if (target.rfind(prefix, 0) != 0)
    return error_reply(http::status::not_found, "no such resource: " + target);
  const std::string path = target.substr(prefix.size());
  if (req.method() == http::verb::get) {
    if (path == "hosts" || path == "guests" || path == "migrations" || path == "evacuations")
      return ask(sys, cluster, api_get_atom::value, path);
    return error_reply(http::status::not_found, "no such resource: " + target);
  }
  if (req.method() != http::verb::post)
    return error_reply(http::status::method_not_allowed, "use GET or POST");
  if (path == "migrations") {
    auto o = body_object(req.body());
    if (!o || member(*o, "guest").empty())
      return error_reply(http::status::bad_request,
                         "expected a JSON object {\"guest\": NAME, \"to\": HOST}");
    return ask(sys, cluster, api_migrate_atom::value, member(*o, "guest"), member(*o, "to"));
  }
  if (path == "guests") {
    auto o = body_object(req.body());
    if (!o || member(*o, "host").empty() || !o->contains("spec"))
      return error_reply(http::status::bad_request,
                         "expected a JSON object {\"host\": HOST, \"spec\": {...}}");
    return ask(sys, cluster, api_create_atom::value, member(*o, "host"),
               json::serialize(o->at("spec")));
  }
  if (path == "evacuations") {
    auto o = body_object(req.body());
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
void stream_events(caf::actor_system& sys, const caf::actor& cluster, tcp::socket& sock,
                   const std::atomic<bool>& stopping) {
  const std::string head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                           "Cache-Control: no-cache\r\nConnection: close\r\n\r\n";
  beast::error_code ec;
  boost::asio::write(sock, boost::asio::buffer(head), ec);
  std::string last;
  while (!ec && !stopping.load()) {
    auto r = ask(sys, cluster, api_get_atom::value, std::string{"migrations"});
    if (r.body != last) {
      last = r.body;
      const std::string msg = "event: migrations\ndata: " + r.body + "\n\n";
      boost::asio::write(sock, boost::asio::buffer(msg), ec);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
}

void serve_connection(caf::actor_system& sys, const caf::actor& cluster, tcp::socket sock,
                      const std::atomic<bool>& stopping) {
  ::pthread_setname_np(::pthread_self(), "http-conn");
  beast::flat_buffer buf;
  beast::error_code ec;
  for (;;) {
    http::request<http::string_body> req;
    http::read(sock, buf, req, ec);
    if (ec)
      return;
    if (req.method() == http::verb::get && req.target() == "/api/v1/events") {
      stream_events(sys, cluster, sock, stopping);
      return;
    }
    auto r = route(sys, cluster, req);
    http::response<http::string_body> res{r.status, req.version()};
    res.set(http::field::content_type, "application/json");
    res.keep_alive(req.keep_alive());
    res.body() = std::move(r.body);
    res.prepare_payload();
    http::write(sock, res, ec);
    if (ec || !req.keep_alive())
      return;
  }
}

} // namespace

struct http_api::impl {
  caf::actor_system* sys = nullptr;
  caf::actor cluster;
  boost::asio::io_context io;
  tcp::acceptor acceptor{io};
  std::atomic<bool> stopping{false};
  std::thread accept_thread;
};

http_api::http_api(std::unique_ptr<impl> p) : impl_(std::move(p)) {}

caf::expected<std::unique_ptr<http_api>> http_api::start(caf::actor_system& sys, caf::actor cluster,
                                                         const host_port& at) {
  auto p = std::make_unique<impl>();
  p->sys = &sys;
  p->cluster = std::move(cluster);
  beast::error_code ec;
  auto addr = boost::asio::ip::make_address(at.host, ec);
  if (!ec) {
    tcp::endpoint ep{addr, at.port};
    p->acceptor.open(ep.protocol(), ec);
    if (!ec)
      p->acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
    if (!ec)
      p->acceptor.bind(ep, ec);
    if (!ec)
      p->acceptor.listen(64, ec);
  }
  if (ec)
    return make_orchestrator_error(orchestrator_errc::invalid_request,
                                   "HTTP API on " + at.host + ":" + std::to_string(at.port) + ": " +
                                     ec.message());
  auto* raw = p.get();
  p->accept_thread = std::thread{[raw] {
    ::pthread_setname_np(::pthread_self(), "http-api");
    while (!raw->stopping.load()) {
      beast::error_code aec;
      tcp::socket sock{raw->io};
      raw->acceptor.accept(sock, aec);
      if (aec || raw->stopping.load())
        continue;
      // Connections are few (operators, ferryctl); one thread each keeps a
      // long event stream from holding up the rest.
      std::thread{serve_connection, std::ref(*raw->sys), raw->cluster, std::move(sock),
                  std::cref(raw->stopping)}
        .detach();
    }
  }};
  return std::unique_ptr<http_api>{new http_api(std::move(p))};
}

uint16_t http_api::port() const {
  beast::error_code ec;
  return impl_->acceptor.local_endpoint(ec).port();
}

http_api::~http_api() {
  impl_->stopping = true;
  beast::error_code ec;
  // A thread blocked in accept() wakes up only when the socket is shut down.
  ::shutdown(impl_->acceptor.native_handle(), SHUT_RDWR);
  impl_->acceptor.close(ec);
  if (impl_->accept_thread.joinable())
    impl_->accept_thread.join();
}

} // namespace ferry
