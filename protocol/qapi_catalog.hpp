#pragma once
// QEMU 9.1's migration schema (protocol/qapi/migration.json, derived from the
// specification seed by ferry-qapi-extract) as lookups: the one source of
// command, event and type names for the QMP layer.

#include <boost/json/object.hpp>

#include <string>
#include <string_view>
#include <vector>

namespace ferry::qapi {

class catalog {
public:
  // The embedded migration schema, parsed on first use.
  static const catalog& migration();

  // Builds a catalog from the JSON array ferry-qapi-extract writes; aborts
  // on a malformed one (it is compiled in: a bad one is a build defect).
  explicit catalog(std::string_view json_array);

  const std::vector<std::string>& commands() const { return commands_; }
  const std::vector<std::string>& events() const { return events_; }
  // The expression defining `name` ('command', 'event', 'struct', 'enum',
  // 'union' or 'alternate'), or nullptr.
  const boost::json::object* find(std::string_view name) const;
  // Values of an enum, in schema order (empty when `name` is no enum).
  std::vector<std::string> enum_values(std::string_view name) const;
  size_t size() const { return exprs_.size(); }

private:
  std::vector<boost::json::object> exprs_;
  std::vector<std::string> commands_;
  std::vector<std::string> events_;
};

} // namespace ferry::qapi
