#include "actors/config_reader.hpp"

#include <toml++/toml.h>

#include <fstream>
#include <sstream>

namespace ferry {

struct config_reader::view {
  std::shared_ptr<const toml::table> document; // sub-readers keep it alive
  const toml::table* table = nullptr;

  toml::node_view<const toml::node> at(std::string_view key) const { return table->at_path(key); }
};

config_reader::config_reader(std::shared_ptr<const view> v, std::string origin, std::string prefix,
                             error_fn make_error)
  : view_(std::move(v)), origin_(std::move(origin)), prefix_(std::move(prefix)),
    invalid_(make_error) {}

caf::expected<config_reader> config_reader::parse(const std::string& text,
                                                  const std::string& origin, error_fn make_error) {
  auto doc = std::make_shared<toml::table>();
  try {
    *doc = toml::parse(text, origin);
  } catch (const toml::parse_error& e) {
    // "file:line:column: why", as compilers print it: editors jump there.
    const auto& at = e.source().begin;
    return make_error(origin + ":" + std::to_string(at.line) + ":" + std::to_string(at.column) +
                      ": " + std::string{e.description()});
  }
  auto v = std::make_shared<view>();
  v->table = doc.get();
  v->document = std::move(doc);
  return config_reader{std::move(v), origin, "", make_error};
}

caf::expected<config_reader> config_reader::load(const std::string& path, error_fn make_error) {
  std::ifstream in{path};
  if (!in)
    return make_error("cannot read config '" + path + "'");
  std::stringstream ss;
  ss << in.rdbuf();
  return parse(ss.str(), path, make_error);
}

std::string config_reader::name(std::string_view key) const {
  return prefix_ + std::string{key};
}

caf::error config_reader::invalid(const std::string& what) const {
  return invalid_(origin_ + ": " + what);
}

caf::expected<std::string> config_reader::str(std::string_view key) const {
  auto n = view_->at(key);
  if (!n)
    return invalid("missing '" + name(key) + "'");
  if (auto v = n.value<std::string>())
    return *v;
  return invalid("'" + name(key) + "' must be a string");
}

caf::expected<std::string> config_reader::str(std::string_view key,
                                              const std::string& fallback) const {
  if (!view_->at(key))
    return fallback;
  return str(key);
}

caf::expected<int64_t> config_reader::integer(std::string_view key, int64_t fallback) const {
  auto n = view_->at(key);
  if (!n)
    return fallback;
  // value_exact: a float such as 2.5 is a mistake, not a 2.
  if (auto v = n.value_exact<int64_t>())
    return *v;
  return invalid("'" + name(key) + "' must be an integer");
}

caf::expected<uint64_t> config_reader::count(std::string_view key, uint64_t fallback) const {
  auto n = view_->at(key);
  if (!n)
    return fallback;
  auto v = n.value_exact<int64_t>();
  if (!v || *v < 0)
    return invalid("'" + name(key) + "' must be a non-negative integer");
  return static_cast<uint64_t>(*v);
}

caf::expected<bool> config_reader::boolean(std::string_view key, bool fallback) const {
  auto n = view_->at(key);
  if (!n)
    return fallback;
  if (auto v = n.value_exact<bool>())
    return *v;
  return invalid("'" + name(key) + "' must be true or false");
}

caf::expected<host_port> config_reader::address(std::string_view key) const {
  auto s = str(key);
  if (!s)
    return s.error();
  auto hp = parse_host_port(*s);
  if (!hp)
    return invalid("'" + name(key) + "' = '" + *s + "' is not HOST:PORT");
  return *hp;
}

caf::expected<tls_identity> config_reader::tls() const {
  tls_identity id;
  for (auto [key, out] : {std::pair{"tls.ca", &id.ca_file}, std::pair{"tls.cert", &id.cert_file},
                          std::pair{"tls.key", &id.key_file}}) {
    auto s = str(key);
    if (!s)
      return s.error();
    // An empty path would leave CAF's openssl module without a CA or a
    // certificate: it then talks to anyone, or to no one, without saying so.
    if (s->empty())
      return invalid("'" + name(key) + "' must name a PEM file");
    *out = std::move(*s);
  }
  return id;
}

caf::expected<std::vector<std::string>>
config_reader::strings(std::string_view key, const std::vector<std::string>& fallback) const {
  auto n = view_->at(key);
  if (!n)
    return fallback;
  const auto* arr = n.as_array();
  if (arr == nullptr)
    return invalid("'" + name(key) + "' must be an array of strings");
  std::vector<std::string> out;
  for (const auto& e : *arr) {
    auto v = e.value<std::string>();
    if (!v)
      return invalid("'" + name(key) + "' must be an array of strings");
    out.push_back(std::move(*v));
  }
  return out;
}

caf::expected<std::vector<config_reader>> config_reader::tables(std::string_view key) const {
  std::vector<config_reader> out;
  auto n = view_->at(key);
  if (!n)
    return out;
  const auto* arr = n.as_array();
  if (arr == nullptr)
    return invalid("'" + name(key) + "' must be an array of tables ([[" + name(key) + "]])");
  for (const auto& entry : *arr) {
    const auto* t = entry.as_table();
    if (t == nullptr)
      return invalid("[[" + name(key) + "]] entries must be tables");
    auto v = std::make_shared<view>();
    v->document = view_->document;
    v->table = t;
    out.push_back(config_reader{std::move(v), origin_, name(key) + ".", invalid_});
  }
  return out;
}

} // namespace ferry
