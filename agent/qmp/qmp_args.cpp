#include "agent/qmp/qmp_args.hpp"

#include <algorithm>

namespace ferry::qmp_args {

namespace json = boost::json;

std::optional<qmp_failure>
check_args(const json::object& args,
           std::initializer_list<std::pair<const char*, json::kind>> spec) {
  for (const auto& kv : args) {
    const bool known =
      std::any_of(spec.begin(), spec.end(), [&](const auto& s) { return kv.key() == s.first; });
    if (!known)
      return generic("Parameter '" + std::string{kv.key()} + "' is unexpected");
  }
  for (const auto& [name, kind] : spec) {
    const auto* v = args.if_contains(name);
    if (v == nullptr)
      return generic(std::string{"Parameter '"} + name + "' is missing");
    const char* expected = kind == json::kind::string    ? "string"
                           : kind == json::kind::double_ ? "number"
                                                         : "integer";
    const bool ok = kind == json::kind::string    ? v->is_string()
                    : kind == json::kind::double_ ? v->is_number()
                                                  : (v->is_int64() || v->is_uint64());
    if (!ok)
      return generic(std::string{"Invalid parameter type for '"} + name +
                     "', expected: " + expected);
  }
  return std::nullopt;
}

std::optional<uint64_t> as_u64(const json::value& v) {
  if (v.is_uint64())
    return v.as_uint64();
  if (v.is_int64() && v.as_int64() >= 0)
    return static_cast<uint64_t>(v.as_int64());
  return std::nullopt;
}

} // namespace ferry::qmp_args
