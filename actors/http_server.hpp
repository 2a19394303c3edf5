#pragma once
// The daemons' HTTP/1.1 server (Boost.Beast): the orchestrator's API and both
// daemons' /metrics. Every client is untrusted, so everything is bounded:
// connections at once, the time to send a request (slow clients are cut),
// header and body sizes, requests waiting for a handler, event streams. One
// named thread does all socket I/O (asynchronously, so a thousand idle or
// slow connections cost memory, not threads); handlers run on a small named
// pool, since they wait for actors; an event stream gets a thread of its
// own. Nothing here ends the daemon: a resource that runs out refuses one
// client with 503.
//
// With `http_tls` the listener speaks only HTTPS (TLS 1.2 or later). A client
// certificate is asked for when a client CA is named: one that does not chain
// to it fails the handshake; a verified one reaches the handler, which
// decides what its subject may do (no certificate is also allowed: the
// handler may take a bearer token instead).

#include "actors/host_port.hpp"

#include <caf/expected.hpp>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace ferry {

struct http_request {
  std::string method; // "GET", "POST", ...
  std::string target; // path and query as sent
  std::string body;
  std::string authorization{}; // the Authorization header, as sent
  std::string client_cert{};   // PEM of the client's verified certificate ("": none)
};

struct http_tls {
  std::string cert;      // the server's certificate chain (PEM file)
  std::string key;       // its private key (PEM file)
  std::string client_ca; // CA file for client certificates ("": none are asked for)
};

// Writes one piece of a streamed body; false once the client has gone.
using http_stream_writer = std::function<bool(std::string_view)>;

struct http_response {
  unsigned status = 200;
  std::string content_type = "application/json";
  std::string body;
  // If set, the body is this stream instead (server-sent events): headers go
  // out at once, then the function writes until it returns, the client
  // leaves or `stopping` turns true; the connection closes after it.
  std::function<void(const http_stream_writer&, const std::atomic<bool>& stopping)> stream;
};

struct http_limits {
  size_t max_connections = 256;                      // open at once; more are closed on accept
  size_t workers = 8;                                // handler threads
  size_t max_queued = 256;                           // requests waiting for a handler; more get 503
  size_t max_streams = 8;                            // event streams at once; more get 503
  std::chrono::milliseconds request_timeout{10'000}; // to send one request (and idle between)
  size_t header_limit = 16 * 1024;
  size_t body_limit = 1024 * 1024;
};

class http_server {
public:
  using handler = std::function<http_response(const http_request&)>;

  // Binds `at` (port 0: any free one) and serves until destroyed. Thread
  // names (at most 15 characters; workers get a number appended) make the
  // threads findable in ps/top. Unreadable TLS files: an error, no server.
  static caf::expected<std::unique_ptr<http_server>>
  start(const host_port& at, handler h, std::string io_thread, const std::string& worker_thread,
        http_limits limits = {}, const std::optional<http_tls>& tls = {});
  ~http_server();
  http_server(const http_server&) = delete;
  http_server& operator=(const http_server&) = delete;

  uint16_t port() const;

  struct impl;

private:
  explicit http_server(std::shared_ptr<impl> p);
  std::shared_ptr<impl> impl_;
};

} // namespace ferry
