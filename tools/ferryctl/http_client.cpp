#include "tools/ferryctl/http_client.hpp"

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>

#include <openssl/ssl.h>

#include <chrono>

namespace ferry::ctl {

namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = boost::asio::ssl;
using tcp = boost::asio::ip::tcp;

namespace {

// A server that accepts and then says nothing must not hang the CLI; the
// orchestrator answers within about 35 s (a guest start it waits for).
constexpr auto request_deadline = std::chrono::seconds(60);

// Runs the operations queued on `io` to their end; the stream's timer
// bounds them.
void run(boost::asio::io_context& io) {
  io.restart();
  io.run();
}

template <class Stream>
http_result exchange(boost::asio::io_context& io, Stream& stream, const host_port& server,
                     const std::string& method, const std::string& target, const std::string& body,
                     const std::string& authorization) {
  http::request<http::string_body> req{http::string_to_verb(method), target, 11};
  req.set(http::field::host, server.host);
  req.set(http::field::content_type, "application/json");
  if (!authorization.empty())
    req.set(http::field::authorization, authorization);
  req.body() = body;
  req.prepare_payload();
  beast::error_code ec;
  beast::flat_buffer buf;
  http::response<http::string_body> res;
  beast::get_lowest_layer(stream).expires_after(request_deadline);
  http::async_write(stream, req, [&](beast::error_code wrote, std::size_t) {
    ec = wrote;
    if (!ec)
      http::async_read(stream, buf, res, [&](beast::error_code read, std::size_t) { ec = read; });
  });
  run(io);
  if (ec)
    return {0, "orchestrator request failed: " + ec.message()};
  return {static_cast<int>(res.result_int()), res.body()};
}

// The context for one HTTPS request, or why there is none.
std::optional<std::string> set_up(ssl::context& ctx, const client_tls& tls) {
  beast::error_code ec;
  ::SSL_CTX_set_min_proto_version(ctx.native_handle(), TLS1_2_VERSION);
  ctx.load_verify_file(tls.ca, ec);
  if (ec)
    return "cannot load the CA file '" + tls.ca + "': " + ec.message();
  ctx.set_verify_mode(ssl::verify_peer);
  ctx.set_verify_callback(ssl::host_name_verification(tls.server_name));
  if (tls.cert.empty() != tls.key.empty())
    return std::string{"a client certificate needs its key (--cert with --key)"};
  if (tls.cert.empty())
    return std::nullopt;
  ctx.use_certificate_chain_file(tls.cert, ec);
  if (!ec)
    ctx.use_private_key_file(tls.key, ssl::context::pem, ec);
  if (ec)
    return "cannot load the client certificate '" + tls.cert + "' or its key: " + ec.message();
  return std::nullopt;
}

} // namespace

http_result http_request(const host_port& server, const std::string& method,
                         const std::string& target, const std::string& body,
                         const std::string& authorization, const std::optional<client_tls>& tls) {
  boost::asio::io_context io;
  tcp::resolver resolver{io};
  beast::tcp_stream stream{io};
  beast::error_code ec;
  auto eps = resolver.resolve(server.host, std::to_string(server.port), ec);
  if (!ec) {
    stream.expires_after(request_deadline);
    stream.async_connect(
      eps, [&](beast::error_code connected, const tcp::endpoint&) { ec = connected; });
    run(io);
  }
  if (ec)
    return {0, "cannot reach the orchestrator at " + server.host + ":" +
                 std::to_string(server.port) + ": " + ec.message()};
  if (!tls)
    return exchange(io, stream, server, method, target, body, authorization);
  ssl::context ctx{ssl::context::tls_client};
  if (auto why = set_up(ctx, *tls))
    return {0, *why};
  beast::ssl_stream<beast::tcp_stream> secure{std::move(stream), ctx};
  // SNI (SSL_set_tlsext_host_name is a macro with a C cast).
  std::string sni = tls->server_name;
  ::SSL_ctrl(secure.native_handle(), SSL_CTRL_SET_TLSEXT_HOSTNAME, TLSEXT_NAMETYPE_host_name,
             sni.data());
  beast::get_lowest_layer(secure).expires_after(request_deadline);
  secure.async_handshake(ssl::stream_base::client, [&](beast::error_code shook) { ec = shook; });
  run(io);
  if (ec)
    return {0, "TLS with the orchestrator at " + server.host + ":" + std::to_string(server.port) +
                 " failed: " + ec.message()};
  return exchange(io, secure, server, method, target, body, authorization);
}

} // namespace ferry::ctl
