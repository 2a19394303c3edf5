#include "actors/http_server.hpp"

#include "common/error.hpp"

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <pthread.h>
#include <sys/socket.h>

#include <thread>

namespace ferry {

namespace beast = boost::beast;
namespace http = beast::http;
using tcp = boost::asio::ip::tcp;

struct http_server::impl {
  handler handle;
  std::string accept_name;
  std::string conn_name;
  boost::asio::io_context io;
  tcp::acceptor acceptor{io};
  std::atomic<bool> stopping{false};
  std::thread accept_thread;
};

namespace {

void stream_body(tcp::socket& sock, const http_response& r, const std::atomic<bool>& stopping) {
  const std::string head = "HTTP/1.1 " + std::to_string(r.status) +
                           " OK\r\nContent-Type: " + r.content_type +
                           "\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n";
  beast::error_code ec;
  boost::asio::write(sock, boost::asio::buffer(head), ec);
  if (ec)
    return;
  r.stream(
    [&sock](std::string_view piece) {
      beast::error_code wec;
      boost::asio::write(sock, boost::asio::buffer(piece.data(), piece.size()), wec);
      return !wec;
    },
    stopping);
}

void serve_connection(const std::shared_ptr<const http_server::impl>& server, tcp::socket sock) {
  const auto& s = *server;
  ::pthread_setname_np(::pthread_self(), s.conn_name.c_str());
  beast::flat_buffer buf;
  beast::error_code ec;
  for (;;) {
    http::request<http::string_body> req;
    http::read(sock, buf, req, ec);
    if (ec)
      return;
    http_request in{std::string{req.method_string()}, std::string{req.target()}, req.body()};
    http_response out;
    try {
      out = s.handle(in);
    } catch (const std::exception& e) {
      // A handler bug must not end the daemon through this thread.
      out = http_response{500, "text/plain", std::string{"internal error: "} + e.what(), {}};
    }
    if (out.stream) {
      stream_body(sock, out, s.stopping);
      return;
    }
    http::response<http::string_body> res{static_cast<http::status>(out.status), req.version()};
    res.set(http::field::content_type, out.content_type);
    res.keep_alive(req.keep_alive());
    res.body() = std::move(out.body);
    res.prepare_payload();
    http::write(sock, res, ec);
    if (ec || !req.keep_alive())
      return;
  }
}

} // namespace

http_server::http_server(std::shared_ptr<impl> p) : impl_(std::move(p)) {}

caf::expected<std::unique_ptr<http_server>> http_server::start(const host_port& at, handler h,
                                                               std::string accept_thread,
                                                               std::string conn_thread) {
  auto p = std::make_shared<impl>();
  p->handle = std::move(h);
  p->accept_name = std::move(accept_thread);
  p->conn_name = std::move(conn_thread);
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
    return make_ferry_error(errc::system_error, "HTTP on " + at.host + ":" +
                                                  std::to_string(at.port) + ": " + ec.message());
  // Connection threads share the server's state: a client may still be
  // connected (keep-alive, an event stream) when the server is destroyed.
  p->accept_thread = std::thread{[weak = std::weak_ptr<impl>{p}, raw = p.get()] {
    ::pthread_setname_np(::pthread_self(), raw->accept_name.c_str());
    while (!raw->stopping.load()) {
      beast::error_code aec;
      tcp::socket sock{raw->io};
      raw->acceptor.accept(sock, aec);
      if (aec || raw->stopping.load())
        continue;
      if (auto shared = weak.lock())
        std::thread{serve_connection, std::shared_ptr<const impl>{shared}, std::move(sock)}
          .detach();
    }
  }};
  return std::unique_ptr<http_server>{new http_server(std::move(p))};
}

uint16_t http_server::port() const {
  beast::error_code ec;
  return impl_->acceptor.local_endpoint(ec).port();
}

http_server::~http_server() {
  impl_->stopping = true;
  beast::error_code ec;
  // A thread blocked in accept() wakes up only when the socket is shut down.
  ::shutdown(impl_->acceptor.native_handle(), SHUT_RDWR);
  impl_->acceptor.close(ec);
  if (impl_->accept_thread.joinable())
    impl_->accept_thread.join();
}

} // namespace ferry
