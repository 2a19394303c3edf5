#include "actors/http_server.hpp"

#include "actors/http_request_reader.hpp"

#include "common/error.hpp"
#include "common/thread_name.hpp"

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>

#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <condition_variable>
#include <deque>
#include <future>
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

// The client's certificate as PEM, if it sent one that verified.
std::string verified_peer_pem(SSL* ssl) {
  X509* cert = ::SSL_get0_peer_certificate(ssl);
  if (cert == nullptr || ::SSL_get_verify_result(ssl) != X509_V_OK)
    return {};
  std::unique_ptr<BIO, decltype(&::BIO_free)> bio{::BIO_new(::BIO_s_mem()), &::BIO_free};
  if (!bio || ::PEM_write_bio_X509(bio.get(), cert) != 1)
    return {};
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio.get(), &data);
  return n > 0 ? std::string(data, static_cast<size_t>(n)) : std::string{};
}

// An HTTPS context: TLS 1.2 or later, this server's identity, and client
// certificates verified against `client_ca` when one is named.
caf::expected<void> set_up_tls(asio::ssl::context& ctx, const http_tls& tls) {
  beast::error_code ec;
  ::SSL_CTX_set_min_proto_version(ctx.native_handle(), TLS1_2_VERSION);
  ctx.use_certificate_chain_file(tls.cert, ec);
  if (ec)
    return make_ferry_error(errc::invalid_argument,
                            "HTTPS certificate '" + tls.cert + "': " + ec.message());
  ctx.use_private_key_file(tls.key, asio::ssl::context::pem, ec);
  if (!ec && ::SSL_CTX_check_private_key(ctx.native_handle()) != 1)
    ec = beast::error_code{EINVAL, beast::generic_category()};
  if (ec)
    return make_ferry_error(errc::invalid_argument,
                            "HTTPS key '" + tls.key +
                              "' (or it does not match the certificate): " + ec.message());
  if (tls.client_ca.empty())
    return {};
  ctx.load_verify_file(tls.client_ca, ec);
  STACK_OF(X509_NAME)* names = ec ? nullptr : ::SSL_load_client_CA_file(tls.client_ca.c_str());
  if (names == nullptr)
    return make_ferry_error(errc::invalid_argument, "HTTPS client CA '" + tls.client_ca +
                                                      "' does not load" +
                                                      (ec ? ": " + ec.message() : std::string{}));
  ::SSL_CTX_set_client_CA_list(ctx.native_handle(), names);
  // Asked for, not required: a client may authenticate with a token instead.
  ctx.set_verify_mode(asio::ssl::verify_peer);
  static const unsigned char session_context[] = "ferry-http";
  ::SSL_CTX_set_session_id_context(ctx.native_handle(), session_context,
                                   sizeof(session_context) - 1);
  return {};
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
  std::optional<asio::ssl::context> tls; // set: HTTPS only
  asio::io_context io;
  tcp::acceptor acceptor{io};
  asio::steady_timer accept_pause{io};
  std::thread io_thread;

  explicit impl(size_t max_queued) : pool(max_queued) {}
  void accept();
};

namespace {

using server_impl = http_server::impl;

using plain_stream = beast::tcp_stream;
using tls_stream = beast::ssl_stream<beast::tcp_stream>;

// One client connection, alive while an operation on it is pending.
template <class Stream>
class session : public std::enable_shared_from_this<session<Stream>> {
  static constexpr bool is_tls = std::is_same_v<Stream, tls_stream>;

public:
  template <class... Args>
  explicit session(server_impl& server, Args&&... stream_args)
    : server_(server), stream_(std::forward<Args>(stream_args)...) {
    ++server_.connections;
  }
  ~session() { --server_.connections; }
  session(const session&) = delete;
  session& operator=(const session&) = delete;

  void start() {
    if constexpr (is_tls) {
      // The handshake counts against the request deadline: a client that
      // stalls in it is cut like a slow request.
      lowest().expires_after(server_.limits.request_timeout);
      stream_.async_handshake(
        asio::ssl::stream_base::server, [self = this->shared_from_this()](beast::error_code ec) {
          if (ec)
            return; // not TLS, or a certificate the CA did not issue
          self->client_cert_ = verified_peer_pem(self->stream_.native_handle());
          self->read();
        });
    } else {
      read();
    }
  }

private:
  beast::tcp_stream& lowest() { return beast::get_lowest_layer(stream_); }

  void read() {
    if (server_.stopping)
      return;
    parser_.emplace();
    http_reading::apply_limits(*parser_, server_.limits);
    // The whole request (and the pause before it) within the deadline: a
    // client trickling bytes is cut like a silent one.
    lowest().expires_after(server_.limits.request_timeout);
    http::async_read(
      stream_, buf_, *parser_,
      [self = this->shared_from_this()](beast::error_code ec, std::size_t) { self->on_read(ec); });
  }

  void on_read(beast::error_code ec) {
    if (auto no = http_reading::refusal(ec, server_.limits))
      return respond(std::move(*no), 11, false);
    if (ec)
      return; // gone, or too slow: the connection closes with this session
    dispatch();
  }

  void dispatch() {
    const unsigned version = parser_->get().version();
    const bool keep = parser_->get().keep_alive();
    http_request in = http_reading::request_of(*parser_, client_cert_);
    auto self = this->shared_from_this();
    const bool queued = server_.pool.post([self, in = std::move(in), version, keep]() mutable {
      http_response out;
      try {
        out = self->server_.handle(in);
      } catch (const std::exception& e) {
        // A handler bug must not end the daemon through this thread.
        out = http_response{500, "application/json", http_reading::error_body(e.what()), {}};
      }
      asio::post(self->lowest().get_executor(),
                 [self, out = std::move(out), version, keep]() mutable {
                   self->respond(std::move(out), version, keep);
                 });
    });
    if (!queued)
      respond({503,
               "application/json",
               http_reading::error_body("the server is busy: try again shortly"),
               {}},
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
    lowest().expires_after(server_.limits.request_timeout);
    http::async_write(stream_, *res,
                      [self = this->shared_from_this(), res](beast::error_code ec, std::size_t) {
                        if (ec || !res->keep_alive())
                          return self->close();
                        self->read();
                      });
  }

  // Ends the connection after the last response: TLS says so first (within
  // a second), then the socket stops sending.
  void close() {
    if constexpr (is_tls) {
      lowest().expires_after(std::chrono::seconds(1));
      stream_.async_shutdown([self = this->shared_from_this()](beast::error_code) {
        beast::error_code ignored;
        self->lowest().socket().shutdown(tcp::socket::shutdown_send, ignored);
      });
    } else {
      beast::error_code ignored;
      lowest().socket().shutdown(tcp::socket::shutdown_send, ignored);
    }
  }

  // An event stream gets a thread of its own, which writes for as long as the
  // client listens; its writes still go through the I/O thread (the stream
  // may be TLS), each within the request deadline.
  void start_stream(http_response out) {
    if (server_.streams.load() >= server_.limits.max_streams)
      return respond(
        {503, "application/json", http_reading::error_body("too many event streams open"), {}}, 11,
        false);
    ++server_.streams;
    try {
      std::thread{[self = this->shared_from_this(), server = server_.shared_from_this(),
                   out = std::move(out)]() mutable {
        name_this_thread(server->io_name + "-sse");
        const std::string head = "HTTP/1.1 " + std::to_string(out.status) +
                                 " OK\r\nContent-Type: " + out.content_type +
                                 "\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n";
        const http_stream_writer write = [&self](std::string_view piece) {
          return self->write_from_stream_thread(std::string{piece});
        };
        if (write(head))
          out.stream(write, server->stopping);
        --server->streams;
        asio::post(self->lowest().get_executor(), [self] { self->close(); });
        self.reset(); // before `server`: the session refers to it
      }}.detach();
    } catch (const std::system_error&) {
      --server_.streams; // no thread to spare: this client goes without
    }
  }

  // Called on the event stream's thread: false once the client has gone, is
  // too slow, or the server stops.
  bool write_from_stream_thread(std::string piece) {
    auto done = std::make_shared<std::promise<bool>>();
    auto written = done->get_future();
    auto data = std::make_shared<std::string>(std::move(piece));
    asio::post(lowest().get_executor(), [self = this->shared_from_this(), data, done] {
      self->lowest().expires_after(self->server_.limits.request_timeout);
      asio::async_write(self->stream_, asio::buffer(*data),
                        [data, done](beast::error_code ec, std::size_t) { done->set_value(!ec); });
    });
    while (written.wait_for(std::chrono::milliseconds(100)) != std::future_status::ready)
      if (server_.stopping)
        return false;
    return written.get();
  }

  server_impl& server_;
  Stream stream_;
  beast::flat_buffer buf_;
  std::optional<http::request_parser<http::string_body>> parser_;
  std::string client_cert_;
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
    if (connections.load() < limits.max_connections) {
      if (tls)
        std::make_shared<session<tls_stream>>(*this, std::move(s), *tls)->start();
      else
        std::make_shared<session<plain_stream>>(*this, std::move(s))->start();
    }
    // (Over the cap the socket closes here: the client may retry.)
    accept();
  });
}

http_server::http_server(std::shared_ptr<impl> p) : impl_(std::move(p)) {}

caf::expected<std::unique_ptr<http_server>> http_server::start(const host_port& at, handler h,
                                                               std::string io_thread,
                                                               const std::string& worker_thread,
                                                               http_limits limits,
                                                               const std::optional<http_tls>& tls) {
  auto p = std::make_shared<impl>(limits.max_queued);
  p->handle = std::move(h);
  p->limits = limits;
  p->io_name = std::move(io_thread);
  if (tls) {
    if (auto ok = set_up_tls(p->tls.emplace(asio::ssl::context::tls_server), *tls); !ok)
      return ok.error();
  }
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
