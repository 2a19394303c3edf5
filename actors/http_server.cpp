#include "actors/http_server.hpp"

#include "common/error.hpp"
#include "common/unique_fd.hpp"

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <poll.h>
#include <pthread.h>
#include <sys/socket.h>

#include <condition_variable>
#include <deque>
#include <mutex>
#include <optional>
#include <system_error>
#include <thread>
#include <vector>

namespace ferry {

namespace beast = boost::beast;
namespace http = beast::http;
namespace asio = boost::asio;
using tcp = asio::ip::tcp;

namespace {

void name_this_thread(const std::string& name) {
  ::pthread_setname_np(::pthread_self(), name.substr(0, 15).c_str());
}

// The handler threads and the requests waiting for one, bounded: a burst of
// requests waits in line up to max_queued, beyond that it is refused.
class handler_pool {
public:
  explicit handler_pool(size_t max_queued) : max_queued_(max_queued) {}
  ~handler_pool() { stop(); }
  handler_pool(const handler_pool&) = delete;
  handler_pool& operator=(const handler_pool&) = delete;

  // False if not even one thread could be started.
  bool start(size_t n, const std::string& name) {
    for (size_t i = 0; i < n; ++i) {
      try {
        threads_.emplace_back([this, name = name + std::to_string(i)] {
          name_this_thread(name);
          run();
        });
      } catch (const std::system_error&) {
        break; // fewer threads, same service
      }
    }
    return !threads_.empty();
  }

  bool post(std::function<void()> job) {
    {
      std::lock_guard lk{mtx_};
      if (stopping_ || jobs_.size() >= max_queued_)
        return false;
      jobs_.push_back(std::move(job));
    }
    cv_.notify_one();
    return true;
  }

  // Running handlers finish; waiting ones are dropped.
  void stop() {
    std::deque<std::function<void()>> dropped;
    {
      std::lock_guard lk{mtx_};
      stopping_ = true;
      dropped.swap(jobs_);
    }
    cv_.notify_all();
    for (auto& t : threads_)
      if (t.joinable())
        t.join();
    threads_.clear();
  }

private:
  void run() {
    for (;;) {
      std::function<void()> job;
      {
        std::unique_lock lk{mtx_};
        cv_.wait(lk, [this] { return stopping_ || !jobs_.empty(); });
        if (stopping_)
          return;
        job = std::move(jobs_.front());
        jobs_.pop_front();
      }
      job();
    }
  }

  std::mutex mtx_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_;
  std::vector<std::thread> threads_;
  size_t max_queued_;
  bool stopping_ = false;
};

// Writes all of `data` to a non-blocking socket, waiting at most `timeout`
// for room each time: a client that stops reading cannot hold the writer.
bool send_all(int fd, std::string_view data, std::chrono::milliseconds timeout) {
  while (!data.empty()) {
    pollfd p{fd, POLLOUT, 0};
    if (::poll(&p, 1, static_cast<int>(timeout.count())) <= 0)
      return false;
    const auto n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
      continue;
    if (n <= 0)
      return false;
    data.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

std::string error_body(const std::string& why) {
  std::string out = "{\"error\":\"";
  for (char c : why)
    out += c == '"' || c == '\\' ? std::string{'\\', c} : std::string{c};
  return out + "\"}";
}

} // namespace

// Members in the order they may be torn down: the io_context goes first and
// destroys the sessions still queued in it, which count themselves out of
// `connections`.
struct http_server::impl : std::enable_shared_from_this<http_server::impl> {
  handler handle;
  http_limits limits;
  std::string io_name;
  std::atomic<bool> stopping{false};
  std::atomic<size_t> connections{0};
  std::atomic<size_t> streams{0};
  handler_pool pool;
  asio::io_context io;
  tcp::acceptor acceptor{io};
  asio::steady_timer accept_pause{io};
  std::thread io_thread;

  explicit impl(size_t max_queued) : pool(max_queued) {}
  void accept();
};

namespace {

using server_impl = http_server::impl;

// One client connection, alive while an operation on it is pending.
class session : public std::enable_shared_from_this<session> {
public:
  session(server_impl& server, tcp::socket s) : server_(server), stream_(std::move(s)) {
    ++server_.connections;
  }
  ~session() { --server_.connections; }
  session(const session&) = delete;
  session& operator=(const session&) = delete;

  void read() {
    if (server_.stopping)
      return;
    parser_.emplace();
    parser_->header_limit(static_cast<std::uint32_t>(server_.limits.header_limit));
    parser_->body_limit(server_.limits.body_limit);
    // The whole request (and the pause before it) within the deadline: a
    // client trickling bytes is cut like a silent one.
    stream_.expires_after(server_.limits.request_timeout);
    http::async_read(
      stream_, buf_, *parser_,
      [self = shared_from_this()](beast::error_code ec, std::size_t) { self->on_read(ec); });
  }

private:
  void on_read(beast::error_code ec) {
    if (ec == http::error::body_limit)
      return respond({413,
                      "application/json",
                      error_body("request body larger than " +
                                 std::to_string(server_.limits.body_limit) + " bytes"),
                      {}},
                     11, false);
    if (ec == http::error::header_limit)
      return respond({431, "application/json", error_body("request header too large"), {}}, 11,
                     false);
    if (ec && ec.category() == http::make_error_code(http::error::bad_target).category() &&
        ec != http::error::end_of_stream && ec != http::error::partial_message)
      return respond(
        {400, "application/json", error_body("malformed request: " + ec.message()), {}}, 11, false);
    if (ec)
      return; // gone, or too slow: the connection closes with this session
    dispatch();
  }

  void dispatch() {
    auto req = parser_->release();
    http_request in{std::string{req.method_string()}, std::string{req.target()},
                    std::move(req.body()), std::string{req[http::field::authorization]}};
    const unsigned version = req.version();
    const bool keep = req.keep_alive();
    auto self = shared_from_this();
    const bool queued = server_.pool.post([self, in = std::move(in), version, keep]() mutable {
      http_response out;
      try {
        out = self->server_.handle(in);
      } catch (const std::exception& e) {
        // A handler bug must not end the daemon through this thread.
        out = http_response{500, "application/json", error_body(e.what()), {}};
      }
      auto ex = self->stream_.get_executor();
      asio::post(ex, [self, out = std::move(out), version, keep]() mutable {
        self->respond(std::move(out), version, keep);
      });
    });
    if (!queued)
      respond({503, "application/json", error_body("the server is busy: try again shortly"), {}},
              version, false);
  }

  void respond(http_response out, unsigned version, bool keep) {
    if (out.stream)
      return start_stream(std::move(out));
    auto res = std::make_shared<http::response<http::string_body>>(
      static_cast<http::status>(out.status), version);
    res->set(http::field::content_type, out.content_type);
    if (out.status == 401)
      res->set(http::field::www_authenticate, "Bearer");
    res->keep_alive(keep);
    res->body() = std::move(out.body);
    res->prepare_payload();
    stream_.expires_after(server_.limits.request_timeout);
    http::async_write(stream_, *res,
                      [self = shared_from_this(), res](beast::error_code ec, std::size_t) {
                        if (ec || !res->keep_alive()) {
                          beast::error_code ignored;
                          self->stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
                          return;
                        }
                        self->read();
                      });
  }

  // An event stream gets the socket and a thread of its own: it writes for
  // as long as the client listens.
  void start_stream(http_response out) {
    if (server_.streams.load() >= server_.limits.max_streams)
      return respond({503, "application/json", error_body("too many event streams open"), {}}, 11,
                     false);
    beast::error_code ec;
    unique_fd fd{stream_.release_socket().release(ec)};
    if (ec || !fd)
      return;
    ++server_.streams;
    try {
      std::thread{[server = server_.shared_from_this(), fd = std::move(fd),
                   out = std::move(out)]() mutable {
        name_this_thread(server->io_name + "-sse");
        const std::string head = "HTTP/1.1 " + std::to_string(out.status) +
                                 " OK\r\nContent-Type: " + out.content_type +
                                 "\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n";
        const auto wait = server->limits.request_timeout;
        if (send_all(fd.get(), head, wait))
          out.stream(
            [&fd, wait](std::string_view piece) { return send_all(fd.get(), piece, wait); },
            server->stopping);
        --server->streams;
      }}.detach();
    } catch (const std::system_error&) {
      --server_.streams; // no thread to spare: this client goes without
    }
  }

  server_impl& server_;
  beast::tcp_stream stream_;
  beast::flat_buffer buf_;
  std::optional<http::request_parser<http::string_body>> parser_;
};

} // namespace

void http_server::impl::accept() {
  acceptor.async_accept([this](beast::error_code ec, tcp::socket s) {
    if (stopping)
      return;
    if (ec) {
      // Out of descriptors or memory: pause rather than spin on the error.
      accept_pause.expires_after(std::chrono::milliseconds(100));
      accept_pause.async_wait([this](beast::error_code) {
        if (!stopping)
          accept();
      });
      return;
    }
    if (connections.load() < limits.max_connections)
      std::make_shared<session>(*this, std::move(s))->read();
    // (Over the cap the socket closes here: the client may retry.)
    accept();
  });
}

http_server::http_server(std::shared_ptr<impl> p) : impl_(std::move(p)) {}

caf::expected<std::unique_ptr<http_server>> http_server::start(const host_port& at, handler h,
                                                               std::string io_thread,
                                                               const std::string& worker_thread,
                                                               http_limits limits) {
  auto p = std::make_shared<impl>(limits.max_queued);
  p->handle = std::move(h);
  p->limits = limits;
  p->io_name = std::move(io_thread);
  beast::error_code ec;
  auto addr = asio::ip::make_address(at.host, ec);
  if (!ec) {
    tcp::endpoint ep{addr, at.port};
    p->acceptor.open(ep.protocol(), ec);
    if (!ec)
      p->acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
    if (!ec)
      p->acceptor.bind(ep, ec);
    if (!ec)
      p->acceptor.listen(asio::socket_base::max_listen_connections, ec);
  }
  if (ec)
    return make_ferry_error(errc::system_error, "HTTP on " + at.host + ":" +
                                                  std::to_string(at.port) + ": " + ec.message());
  if (!p->pool.start(limits.workers, worker_thread))
    return make_ferry_error(errc::system_error, "HTTP: cannot start handler threads");
  p->accept();
  try {
    p->io_thread = std::thread{[raw = p.get()] {
      name_this_thread(raw->io_name);
      raw->io.run();
    }};
  } catch (const std::system_error& e) {
    return make_ferry_error(errc::system_error, std::string{"HTTP: cannot start: "} + e.what());
  }
  return std::unique_ptr<http_server>{new http_server(std::move(p))};
}

uint16_t http_server::port() const {
  beast::error_code ec;
  return impl_->acceptor.local_endpoint(ec).port();
}

http_server::~http_server() {
  try {
    impl_->stopping = true;
    asio::post(impl_->io, [p = impl_.get()] {
      beast::error_code ec;
      p->acceptor.close(ec);
      p->accept_pause.cancel();
    });
    impl_->pool.stop();
    impl_->io.stop();
    if (impl_->io_thread.joinable())
      impl_->io_thread.join();
  } catch (...) {
    // Nobody to tell while the daemon takes this server down; io.stop() has
    // ended the I/O or the process is exiting.
  }
}

} // namespace ferry
