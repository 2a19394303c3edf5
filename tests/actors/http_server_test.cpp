// The daemons' HTTP server under hostile clients: every limit holds (body and
// header size, request deadline, connection cap, handler queue, event
// streams) with a clear status, and after a flood of idle or trickling
// connections the server still answers at once.

#include "actors/http_server.hpp"
#include "tests/support/process.hpp"

#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace ferry {
namespace {

using namespace std::chrono_literals;
using test::connect_loopback;

void send_text(int fd, const std::string& s) {
  ASSERT_EQ(::send(fd, s.data(), s.size(), MSG_NOSIGNAL), static_cast<ssize_t>(s.size()));
}

// Everything the server sends until it closes or `limit` passes.
std::string read_all(int fd, std::chrono::milliseconds limit = 3000ms) {
  std::string out;
  const auto end = std::chrono::steady_clock::now() + limit;
  for (;;) {
    const auto left =
      std::chrono::duration_cast<std::chrono::milliseconds>(end - std::chrono::steady_clock::now());
    pollfd p{fd, POLLIN, 0};
    if (left.count() <= 0 || ::poll(&p, 1, static_cast<int>(left.count())) <= 0)
      return out + "<timeout>";
    char buf[4096];
    const auto n = ::read(fd, buf, sizeof buf);
    if (n <= 0)
      return out;
    out.append(buf, static_cast<size_t>(n));
  }
}

std::string request(uint16_t port, const std::string& text) {
  const int fd = connect_loopback(port);
  if (fd < 0)
    return "<refused>";
  send_text(fd, text);
  auto out = read_all(fd);
  ::close(fd);
  return out;
}

const std::string get_close = "GET /x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";

struct server_fixture : ::testing::Test {
  http_limits limits;
  std::unique_ptr<http_server> server;
  std::atomic<int> served{0};

  void start(http_server::handler h = {}) {
    if (!h)
      h = [this](const http_request& r) {
        ++served;
        return http_response{200, "text/plain", r.method + " " + r.target + " " + r.body, {}};
      };
    auto s = http_server::start({"127.0.0.1", 0}, std::move(h), "test-http", "test-w", limits);
    ASSERT_TRUE(s);
    server = std::move(*s);
  }
  uint16_t port() const { return server->port(); }
};

TEST_F(server_fixture, serves_requests_and_keeps_the_connection_alive) {
  start();
  const int fd = connect_loopback(port());
  send_text(fd, "GET /a HTTP/1.1\r\nHost: t\r\n\r\nPOST /b HTTP/1.1\r\nHost: t\r\n"
                "Content-Length: 2\r\nConnection: close\r\n\r\nhi");
  const auto out = read_all(fd);
  ::close(fd);
  EXPECT_NE(out.find("GET /a "), std::string::npos) << out;
  EXPECT_NE(out.find("POST /b hi"), std::string::npos) << out;
  EXPECT_EQ(served, 2);
}

TEST_F(server_fixture, oversized_bodies_and_headers_and_garbage_get_a_clear_status) {
  limits.body_limit = 1024;
  limits.header_limit = 1024;
  start();
  auto out = request(port(), "POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 4096\r\n\r\n" +
                               std::string(4096, 'x'));
  EXPECT_NE(out.find("HTTP/1.1 413"), std::string::npos) << out;
  EXPECT_NE(out.find("request body larger than 1024 bytes"), std::string::npos) << out;
  out =
    request(port(), "GET /x HTTP/1.1\r\nHost: t\r\nX-Big: " + std::string(4096, 'y') + "\r\n\r\n");
  EXPECT_NE(out.find("HTTP/1.1 431"), std::string::npos) << out;
  out = request(port(), "NOT HTTP AT ALL\r\n\r\n");
  EXPECT_NE(out.find("HTTP/1.1 400"), std::string::npos) << out;
  EXPECT_EQ(served, 0) << "no handler saw any of them";
  EXPECT_NE(request(port(), get_close).find("HTTP/1.1 200"), std::string::npos);
}

// Slow-loris: clients that send a request a byte at a time (or stop half
// way) are cut at the request deadline; a flood of 500 such connections
// over the connection cap leaves the server answering a real request at once.
TEST_F(server_fixture, a_flood_of_slow_and_idle_connections_is_cut_and_service_goes_on) {
  limits.request_timeout = 1000ms;
  limits.max_connections = 64;
  start();
  std::vector<int> flood;
  for (int i = 0; i < 500; ++i) {
    const int fd = connect_loopback(port());
    if (fd >= 0) {
      (void) ::send(fd, "GET / HTTP/1.1\r\nHost:", 21, MSG_NOSIGNAL);
      flood.push_back(fd);
    }
  }
  ASSERT_GT(flood.size(), 400U);
  // Within the deadline (and a little) every one of them is closed.
  const auto t0 = std::chrono::steady_clock::now();
  size_t closed = 0;
  for (int fd : flood) {
    const auto rest = read_all(fd, 4000ms);
    closed += rest.find("<timeout>") == std::string::npos ? 1 : 0;
    ::close(fd);
  }
  EXPECT_EQ(closed, flood.size()) << "idle half-requests are cut, over the cap or not";
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 4s);
  // And a real request is answered at once afterwards.
  const auto t1 = std::chrono::steady_clock::now();
  EXPECT_NE(request(port(), get_close).find("HTTP/1.1 200"), std::string::npos);
  EXPECT_LT(std::chrono::steady_clock::now() - t1, 1s);
}

TEST_F(server_fixture, a_full_handler_queue_answers_503_and_no_request_waits_forever) {
  limits.workers = 1;
  limits.max_queued = 1;
  std::mutex m;
  std::condition_variable cv;
  bool release = false;
  start([&](const http_request&) {
    std::unique_lock lk{m};
    cv.wait_for(lk, 5s, [&] { return release; });
    return http_response{200, "text/plain", "slow", {}};
  });
  std::vector<int> fds;
  for (int i = 0; i < 3; ++i) {
    fds.push_back(connect_loopback(port()));
    send_text(fds.back(), get_close);
    std::this_thread::sleep_for(100ms); // one running, one queued, then the third
  }
  const auto third = read_all(fds[2], 2000ms);
  EXPECT_NE(third.find("HTTP/1.1 503"), std::string::npos) << third;
  EXPECT_NE(third.find("busy"), std::string::npos) << third;
  {
    std::lock_guard lk{m};
    release = true;
  }
  cv.notify_all();
  EXPECT_NE(read_all(fds[0]).find("slow"), std::string::npos);
  EXPECT_NE(read_all(fds[1]).find("slow"), std::string::npos);
  for (int fd : fds)
    ::close(fd);
}

TEST_F(server_fixture, event_streams_are_limited_and_end_with_the_server) {
  limits.max_streams = 1;
  start([](const http_request&) {
    http_response r;
    r.content_type = "text/event-stream";
    r.stream = [](const http_stream_writer& w, const std::atomic<bool>& stopping) {
      while (!stopping.load() && w("data: tick\n\n"))
        std::this_thread::sleep_for(50ms);
    };
    return r;
  });
  const int first = connect_loopback(port());
  send_text(first, get_close);
  std::this_thread::sleep_for(200ms);
  const auto second = request(port(), get_close);
  EXPECT_NE(second.find("HTTP/1.1 503"), std::string::npos) << second;
  EXPECT_NE(second.find("too many event streams"), std::string::npos) << second;
  char buf[256];
  EXPECT_GT(::read(first, buf, sizeof buf), 0) << "the first stream flows";
  server.reset(); // the stream ends with the server
  const auto rest = read_all(first, 2000ms);
  EXPECT_EQ(rest.find("<timeout>"), std::string::npos) << "closed, not left hanging";
  ::close(first);
}

} // namespace
} // namespace ferry
