#include "orchestrator/api_request.hpp"

#include <boost/json.hpp>

#include <charconv>
#include <optional>
#include <string_view>

namespace ferry::api {

namespace {

namespace json = boost::json;

error error_of(unsigned status, const std::string& desc) {
  return {status, error_body(desc)};
}

// A piece of the request quoted in an error: bytes outside printable ASCII
// as %XX, so that the answer stays valid JSON (UTF-8) whatever was sent.
std::string quoted(std::string_view raw) {
  std::string out;
  for (const char c : raw) {
    const auto b = static_cast<unsigned char>(c);
    if (b >= 0x20 && b < 0x7f && b != '%') {
      out += c;
      continue;
    }
    constexpr char hex[] = "0123456789ABCDEF";
    out += '%';
    out += hex[b >> 4];
    out += hex[b & 15];
  }
  return out;
}

std::optional<json::object> body_object(const std::string& body) {
  boost::system::error_code ec;
  auto v = json::parse(body, ec);
  if (!ec && v.is_object())
    return v.as_object();
  return std::nullopt;
}

std::string member(const json::object& o, const char* key) {
  const auto* v = o.if_contains(key);
  return v != nullptr && v->is_string() ? std::string{v->as_string()} : std::string{};
}

command parse_post(const std::string& path, const std::string& target, const std::string& body) {
  if (path == "migrations") {
    auto o = body_object(body);
    if (!o || member(*o, "guest").empty())
      return error_of(400, "expected a JSON object {\"guest\": NAME, \"to\": HOST}");
    return migrate{member(*o, "guest"), member(*o, "to")};
  }
  if (path == "guests") {
    auto o = body_object(body);
    if (!o || member(*o, "host").empty() || !o->contains("spec"))
      return error_of(400, "expected a JSON object {\"host\": HOST, \"spec\": {...}}");
    return create{member(*o, "host"), json::serialize(o->at("spec"))};
  }
  if (path == "pairs") {
    auto o = body_object(body);
    if (!o || member(*o, "guest").empty())
      return error_of(400, "expected a JSON object {\"guest\": NAME, \"secondary\": HOST}");
    return protect{member(*o, "guest"), member(*o, "secondary")};
  }
  const std::string pairs = "pairs/";
  const std::string unprot = "/unprotect";
  if (path.rfind(pairs, 0) == 0 && path.size() > pairs.size() + unprot.size() &&
      path.compare(path.size() - unprot.size(), unprot.size(), unprot) == 0) {
    const std::string guest = path.substr(pairs.size(), path.size() - pairs.size() - unprot.size());
    if (guest.find('/') != std::string::npos)
      return error_of(404, "no such resource: " + quoted(target));
    return unprotect{guest};
  }
  if (path == "snapshots") {
    auto o = body_object(body);
    if (!o || member(*o, "guest").empty() || member(*o, "tag").empty())
      return error_of(400, "expected a JSON object {\"guest\": NAME, \"tag\": TAG, \"op\": "
                           "\"save\"|\"restore\"|\"delete\"}");
    const std::string op = o->contains("op") ? member(*o, "op") : "save";
    if (op != "save" && op != "restore" && op != "delete")
      return error_of(400, "op must be save, restore or delete");
    return snapshot{member(*o, "guest"), member(*o, "tag"), op};
  }
  if (path == "evacuations") {
    auto o = body_object(body);
    if (!o || member(*o, "host").empty())
      return error_of(400, "expected a JSON object {\"host\": HOST}");
    return evacuate{member(*o, "host")};
  }
  const std::string mig = "migrations/";
  const std::string suffix = "/cancel";
  if (path.rfind(mig, 0) == 0 && path.size() > mig.size() + suffix.size() &&
      path.compare(path.size() - suffix.size(), suffix.size(), suffix) == 0) {
    const std::string id_text = path.substr(mig.size(), path.size() - mig.size() - suffix.size());
    int64_t id = 0;
    auto [end, ec] = std::from_chars(id_text.data(), id_text.data() + id_text.size(), id);
    if (ec != std::errc{} || end != id_text.data() + id_text.size())
      return error_of(400, "'" + quoted(id_text) + "' is not a migration id");
    return cancel{id};
  }
  return error_of(404, "no such resource: " + quoted(target));
}

} // namespace

std::string error_body(const std::string& desc) {
  return json::serialize(json::object{{"error", desc}});
}

command parse_request(const std::string& method, const std::string& target,
                      const std::string& body) {
  const std::string prefix = "/api/v1/";
  if (target.rfind(prefix, 0) != 0)
    return error_of(404, "no such resource: " + quoted(target));
  const std::string path = target.substr(prefix.size());
  if (method == "GET") {
    if (path == "hosts" || path == "guests" || path == "migrations" || path == "evacuations" ||
        path == "pairs" || path == "snapshots")
      return list{path};
    return error_of(404, "no such resource: " + quoted(target));
  }
  if (method != "POST")
    return error_of(405, "use GET or POST");
  return parse_post(path, target, body);
}

} // namespace ferry::api
