#include "protocol/qmp_request.hpp"

namespace ferry::qmp {

namespace json = boost::json;

std::variant<request, envelope_error> parse_request(const json::value& v) {
  const auto* obj = v.if_object();
  if (obj == nullptr)
    return envelope_error{"QMP input must be a JSON object", std::nullopt};
  std::optional<json::value> id;
  if (auto it = obj->find("id"); it != obj->end())
    id = it->value();
  const auto* exec = obj->if_contains("execute");
  const auto* oob = obj->if_contains("exec-oob");
  if (exec != nullptr && oob != nullptr)
    return envelope_error{"QMP input member 'exec-oob' is unexpected", id};
  if (exec == nullptr && oob == nullptr)
    return envelope_error{"QMP input lacks member 'execute'", id};
  const auto* name = exec != nullptr ? exec : oob;
  if (!name->is_string())
    return envelope_error{std::string{"QMP input member '"} +
                            (exec != nullptr ? "execute" : "exec-oob") + "' must be a string",
                          id};
  request r;
  r.command = std::string{name->as_string()};
  r.oob = oob != nullptr;
  r.id = id;
  for (const auto& kv : *obj) {
    const auto key = kv.key();
    if (key == "execute" || key == "exec-oob" || key == "id")
      continue;
    if (key == "arguments") {
      if (!kv.value().is_object())
        return envelope_error{"QMP input member 'arguments' must be an object", id};
      r.arguments = kv.value().as_object();
      continue;
    }
    return envelope_error{"QMP input member '" + std::string{key} + "' is unexpected", id};
  }
  return r;
}

} // namespace ferry::qmp
