#include "protocol/qapi_catalog.hpp"

#include <boost/json.hpp>

#include <cstdio>
#include <cstdlib>

extern "C" const char ferry_qapi_migration_start[];
extern "C" const char ferry_qapi_migration_end[];

namespace ferry::qapi {

namespace json = boost::json;

namespace {

constexpr std::string_view kinds[] = {"command", "event", "struct", "enum", "union", "alternate"};

std::string_view name_of(const json::object& e) {
  for (auto k : kinds)
    if (const auto* v = e.if_contains(k); v != nullptr && v->is_string())
      return v->as_string();
  return {};
}

} // namespace

catalog::catalog(std::string_view text) {
  boost::system::error_code ec;
  auto v = json::parse(text, ec);
  if (ec || !v.is_array()) {
    std::fprintf(stderr, "ferry: embedded QAPI catalog is not a JSON array\n");
    std::abort();
  }
  for (auto& e : v.as_array()) {
    if (!e.is_object() || name_of(e.as_object()).empty()) {
      std::fprintf(stderr, "ferry: embedded QAPI catalog has an unnamed expression\n");
      std::abort();
    }
    auto& o = e.as_object();
    if (o.contains("command"))
      commands_.emplace_back(o.at("command").as_string());
    else if (o.contains("event"))
      events_.emplace_back(o.at("event").as_string());
    exprs_.push_back(std::move(o));
  }
}

const catalog& catalog::migration() {
  static const catalog instance{
    std::string_view{ferry_qapi_migration_start,
                     static_cast<size_t>(ferry_qapi_migration_end - ferry_qapi_migration_start)}};
  return instance;
}

const json::object* catalog::find(std::string_view name) const {
  for (const auto& e : exprs_)
    if (name_of(e) == name)
      return &e;
  return nullptr;
}

std::vector<std::string> catalog::enum_values(std::string_view name) const {
  std::vector<std::string> out;
  const auto* e = find(name);
  if (e == nullptr || !e->contains("enum"))
    return out;
  for (const auto& v : e->at("data").as_array()) {
    // A value is a name, or {'name': ..., 'if'/'features': ...}.
    if (v.is_string())
      out.emplace_back(v.as_string());
    else
      out.emplace_back(v.as_object().at("name").as_string());
  }
  return out;
}

} // namespace ferry::qapi
