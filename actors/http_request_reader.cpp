#include "actors/http_request_reader.hpp"

#include <boost/asio/buffer.hpp>
#include <boost/beast/http/error.hpp>

#include <cstdint>

namespace ferry::http_reading {

namespace http = boost::beast::http;

std::string error_body(const std::string& why) {
  std::string out = "{\"error\":\"";
  for (char c : why) {
    if (c == '"' || c == '\\')
      out += '\\';
    if (static_cast<unsigned char>(c) >= 0x20)
      out += c;
  }
  return out + "\"}";
}

void apply_limits(parser& p, const http_limits& limits) {
  p.header_limit(static_cast<std::uint32_t>(limits.header_limit));
  p.body_limit(limits.body_limit);
}

std::optional<http_response> refusal(const boost::system::error_code& ec,
                                     const http_limits& limits) {
  if (ec == http::error::body_limit)
    return http_response{
      413,
      "application/json",
      error_body("request body larger than " + std::to_string(limits.body_limit) + " bytes"),
      {}};
  if (ec == http::error::header_limit)
    return http_response{431, "application/json", error_body("request header too large"), {}};
  if (ec && ec.category() == http::make_error_code(http::error::bad_target).category() &&
      ec != http::error::end_of_stream && ec != http::error::partial_message &&
      ec != http::error::need_more)
    return http_response{
      400, "application/json", error_body("malformed request: " + ec.message()), {}};
  return std::nullopt;
}

http_request request_of(parser& p, std::string client_cert) {
  auto req = p.release();
  return http_request{std::string{req.method_string()}, std::string{req.target()},
                      std::move(req.body()), std::string{req[http::field::authorization]},
                      std::move(client_cert)};
}

outcome read_request(std::string_view bytes, const http_limits& limits) {
  parser p;
  apply_limits(p, limits);
  p.eager(true);
  boost::system::error_code ec;
  while (!bytes.empty() && !p.is_done()) {
    const auto used = p.put(boost::asio::buffer(bytes.data(), bytes.size()), ec);
    if (ec == http::error::need_more)
      return {};
    if (ec)
      return {std::nullopt, refusal(ec, limits)};
    if (used == 0)
      return {};
    bytes.remove_prefix(used);
  }
  if (!p.is_done())
    return {};
  return {request_of(p, {}), std::nullopt};
}

} // namespace ferry::http_reading
