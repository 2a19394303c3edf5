// libFuzzer: the orchestrator's request path with hostile bytes — the HTTP
// server's reader (Beast's parser under the server's limits), the caller the
// credentials name, the command the method, target and JSON body ask for, and
// a create's guest spec. Nothing may crash; a request that is read obeys the
// limits; a refusal is one of the documented statuses with a JSON error; a
// command carries what the request said.

#include "actors/http_request_reader.hpp"
#include "orchestrator/api_auth.hpp"
#include "orchestrator/api_request.hpp"
#include "orchestrator/guest_spec_json.hpp"

#include <boost/json.hpp>

#include <cstdlib>
#include <string>
#include <variant>

namespace {

const ferry::api_tokens& tokens() {
  static const ferry::api_tokens t =
    *ferry::api_tokens::parse("operator fuzz-op op-0123456789abcdef0123456789abcdef\n"
                              "viewer fuzz-view view-0123456789abcdef0123456789abcd\n",
                              "fuzz");
  return t;
}

void require(bool ok) {
  if (!ok)
    std::abort();
}

bool is_json_error(const std::string& body) {
  boost::system::error_code ec;
  auto v = boost::json::parse(body, ec);
  return !ec && v.is_object() && v.as_object().contains("error");
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  ferry::http_limits limits;
  limits.header_limit = 2048;
  limits.body_limit = 4096;
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  auto read = ferry::http_reading::read_request(bytes, limits);
  if (read.refusal) {
    const unsigned s = read.refusal->status;
    require(s == 400 || s == 413 || s == 431);
    require(is_json_error(read.refusal->body));
    return 0;
  }
  if (!read.request)
    return 0;
  const auto& req = *read.request;
  require(req.body.size() <= limits.body_limit);
  const auto who = ferry::request_caller(tokens(), req.authorization, req.client_cert);
  if (auto no = ferry::authorize(who, req.method)) {
    require(no->status == 401 || no->status == 403);
    require(is_json_error(no->body));
  }
  auto cmd = ferry::api::parse_request(req.method, req.target, req.body);
  if (auto* e = std::get_if<ferry::api::error>(&cmd)) {
    require(e->status == 400 || e->status == 404 || e->status == 405);
    require(is_json_error(e->body));
  } else {
    require(req.target.rfind("/api/v1/", 0) == 0);
    require((req.method == "GET") == std::holds_alternative<ferry::api::list>(cmd));
  }
  if (auto* c = std::get_if<ferry::api::create>(&cmd)) {
    require(!c->host.empty());
    (void) ferry::guest_spec_from_json(c->spec_json);
  }
  return 0;
}
