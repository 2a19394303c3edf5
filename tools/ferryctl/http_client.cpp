#include "tools/ferryctl/http_client.hpp"

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

namespace ferry::ctl {

namespace beast = boost::beast;
namespace http = beast::http;
using tcp = boost::asio::ip::tcp;

http_result http_request(const host_port& server, const std::string& method,
                         const std::string& target, const std::string& body,
                         const std::string& authorization) {
  boost::asio::io_context io;
  tcp::resolver resolver{io};
  beast::tcp_stream stream{io};
  beast::error_code ec;
  auto eps = resolver.resolve(server.host, std::to_string(server.port), ec);
  if (!ec)
    stream.connect(eps, ec);
  if (ec)
    return {0, "cannot reach the orchestrator at " + server.host + ":" +
                 std::to_string(server.port) + ": " + ec.message()};
  http::request<http::string_body> req{http::string_to_verb(method), target, 11};
  req.set(http::field::host, server.host);
  req.set(http::field::content_type, "application/json");
  if (!authorization.empty())
    req.set(http::field::authorization, authorization);
  req.body() = body;
  req.prepare_payload();
  http::write(stream, req, ec);
  beast::flat_buffer buf;
  http::response<http::string_body> res;
  if (!ec)
    http::read(stream, buf, res, ec);
  if (ec)
    return {0, "orchestrator request failed: " + ec.message()};
  return {static_cast<int>(res.result_int()), res.body()};
}

} // namespace ferry::ctl
