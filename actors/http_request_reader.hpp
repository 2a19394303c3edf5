#pragma once
// How the HTTP server reads one request: Beast's parser under the server's
// limits, the answer to a malformed or oversized request, and the request a
// handler sees. The server and the fuzz target both use it, so what is
// fuzzed is what is served.

#include "actors/http_server.hpp"

#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/system/error_code.hpp>

#include <optional>
#include <string>
#include <string_view>

namespace ferry::http_reading {

using parser = boost::beast::http::request_parser<boost::beast::http::string_body>;

// {"error": why}, escaped.
std::string error_body(const std::string& why);

void apply_limits(parser& p, const http_limits& limits);

// The answer to a failed read (413, 431, 400); nothing when the client went
// away or was too slow: then the connection just closes.
std::optional<http_response> refusal(const boost::system::error_code& ec,
                                     const http_limits& limits);

// The finished request the parser holds, as the handler gets it.
http_request request_of(parser& p, std::string client_cert);

// One request read from `bytes` instead of a socket: the request, or the
// refusal, or neither (the bytes end before the request does).
struct outcome {
  std::optional<http_request> request;
  std::optional<http_response> refusal;
};
outcome read_request(std::string_view bytes, const http_limits& limits);

} // namespace ferry::http_reading
