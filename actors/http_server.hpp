#pragma once
// A small blocking HTTP/1.1 server (Boost.Beast) for the daemons' endpoints:
// the orchestrator's API and both daemons' /metrics. It runs on its own named
// threads (one accepting, one per connection: clients are few: Prometheus,
// ferryctl, operators), so no actor ever blocks on a socket; handlers reach
// actors with request/receive from those threads.

#include "actors/host_port.hpp"

#include <caf/expected.hpp>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

namespace ferry {

struct http_request {
  std::string method; // "GET", "POST", ...
  std::string target; // path and query as sent
  std::string body;
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

class http_server {
public:
  using handler = std::function<http_response(const http_request&)>;

  // Binds `at` (port 0: any free one) and serves until destroyed. Thread
  // names (at most 15 characters) make the threads findable in ps/top.
  static caf::expected<std::unique_ptr<http_server>>
  start(const host_port& at, handler h, std::string accept_thread, std::string conn_thread);
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
