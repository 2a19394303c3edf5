#include "protocol/qapi_validate.hpp"

#include <boost/json.hpp>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <map>

namespace ferry::qapi {

namespace json = boost::json;

namespace {

constexpr size_t max_depth = 32; // schema types nest far less; input may lie

struct int_range {
  long double min;
  long double max;
};

const std::map<std::string, int_range, std::less<>>& int_types() {
  static const std::map<std::string, int_range, std::less<>> t = {
    {"int", {static_cast<long double>(INT64_MIN), static_cast<long double>(INT64_MAX)}},
    {"int64", {static_cast<long double>(INT64_MIN), static_cast<long double>(INT64_MAX)}},
    {"int8", {INT8_MIN, INT8_MAX}},
    {"int16", {INT16_MIN, INT16_MAX}},
    {"int32", {INT32_MIN, INT32_MAX}},
    {"uint8", {0, UINT8_MAX}},
    {"uint16", {0, UINT16_MAX}},
    {"uint32", {0, UINT32_MAX}},
    {"uint64", {0, static_cast<long double>(UINT64_MAX)}},
    {"size", {0, static_cast<long double>(UINT64_MAX)}},
  };
  return t;
}

std::string wrong_type(const std::string& name, const char* expected) {
  return "Invalid parameter type for '" + name + "', expected: " + expected;
}

class checker {
public:
  explicit checker(const catalog& cat) : cat_(cat) {}

  std::optional<std::string> value(const json::value& type, const json::value& v,
                                   const std::string& name, size_t depth) {
    if (depth > max_depth)
      return "Parameter '" + name + "' nests too deeply";
    if (const auto* arr = type.if_array()) {
      if (!v.is_array())
        return wrong_type(name, "array");
      const auto& elems = v.as_array();
      for (size_t i = 0; i < elems.size(); ++i)
        if (auto e = value(arr->at(0), elems[i], name + "[" + std::to_string(i) + "]", depth + 1))
          return e;
      return std::nullopt;
    }
    if (const auto* dict = type.if_object())
      return members(*dict, v, name, depth);
    return named(std::string{type.as_string()}, v, name, depth);
  }

  // An object holding exactly the members `dict` declares.
  std::optional<std::string> members(const json::object& dict, const json::value& v,
                                     const std::string& name, size_t depth) {
    if (!v.is_object())
      return wrong_type(name, "object");
    const auto& obj = v.as_object();
    auto member_name = [&](std::string_view key) {
      return name.empty() ? std::string{key} : name + "." + std::string{key};
    };
    for (const auto& kv : obj) {
      if (!dict.contains(kv.key()) && !dict.contains("*" + std::string{kv.key()}))
        return "Parameter '" + member_name(kv.key()) + "' is unexpected";
    }
    for (const auto& kv : dict) {
      std::string_view key = kv.key();
      const bool optional = key.starts_with('*');
      if (optional)
        key.remove_prefix(1);
      const auto* got = obj.if_contains(key);
      if (got == nullptr) {
        if (!optional)
          return "Parameter '" + member_name(key) + "' is missing";
        continue;
      }
      // A member's type is a name, ['T'], or {'type': T, 'if'/'features': ...}.
      const json::value& t =
        kv.value().is_object() ? kv.value().as_object().at("type") : kv.value();
      if (auto e = value(t, *got, member_name(key), depth + 1))
        return e;
    }
    return std::nullopt;
  }

private:
  std::optional<std::string> named(const std::string& type, const json::value& v,
                                   const std::string& name, size_t depth) {
    if (auto it = int_types().find(type); it != int_types().end()) {
      long double n;
      if (v.is_int64())
        n = static_cast<long double>(v.as_int64());
      else if (v.is_uint64())
        n = static_cast<long double>(v.as_uint64());
      else
        return wrong_type(name, "integer");
      if (n < it->second.min || n > it->second.max)
        return "Parameter '" + name + "' expects " + type;
      return std::nullopt;
    }
    if (type == "number")
      return v.is_number() ? std::nullopt : std::optional{wrong_type(name, "number")};
    if (type == "str")
      return v.is_string() ? std::nullopt : std::optional{wrong_type(name, "string")};
    if (type == "bool")
      return v.is_bool() ? std::nullopt : std::optional{wrong_type(name, "boolean")};
    if (type == "null")
      return v.is_null() ? std::nullopt : std::optional{wrong_type(name, "null")};
    if (type == "any")
      return std::nullopt;
    const auto* def = cat_.find(type);
    if (def == nullptr)
      return std::nullopt; // defined in another schema file: not checked here
    if (def->contains("enum")) {
      if (!v.is_string())
        return wrong_type(name, "string");
      const auto values = cat_.enum_values(type);
      const std::string s{v.as_string()};
      if (std::find(values.begin(), values.end(), s) == values.end())
        return "Parameter '" + name + "' does not accept value '" + s + "'";
      return std::nullopt;
    }
    if (def->contains("struct"))
      return members(struct_members(*def), v, name, depth);
    if (def->contains("union"))
      return union_value(*def, v, name, depth);
    if (def->contains("alternate")) {
      for (const auto& kv : def->at("data").as_object())
        if (!value(kv.value(), v, name, depth + 1))
          return std::nullopt;
      return wrong_type(name, "a value of one of its alternatives");
    }
    return std::nullopt;
  }

  // A struct's members including those of its base.
  json::object struct_members(const json::object& def) {
    json::object all;
    if (const auto* base = def.if_contains("base")) {
      if (base->is_object())
        all = base->as_object();
      else if (const auto* b = cat_.find(base->as_string()); b != nullptr && b->contains("struct"))
        all = struct_members(*b);
    }
    if (const auto* data = def.if_contains("data"); data != nullptr && data->is_object())
      for (const auto& kv : data->as_object())
        all[kv.key()] = kv.value();
    return all;
  }

  std::optional<std::string> union_value(const json::object& def, const json::value& v,
                                         const std::string& name, size_t depth) {
    if (!v.is_object())
      return wrong_type(name, "object");
    json::object base;
    if (const auto* b = def.if_contains("base")) {
      if (b->is_object())
        base = b->as_object();
      else if (const auto* bdef = cat_.find(b->as_string()); bdef != nullptr)
        base = struct_members(*bdef);
    }
    const std::string disc{def.at("discriminator").as_string()};
    const auto* tag = v.as_object().if_contains(disc);
    const std::string disc_name = name.empty() ? disc : name + "." + disc;
    if (tag == nullptr)
      return "Parameter '" + disc_name + "' is missing";
    const json::value* disc_type = base.if_contains(disc);
    if (disc_type == nullptr)
      disc_type = base.if_contains("*" + disc);
    if (disc_type == nullptr)
      return std::nullopt; // a schema we cannot read further: accept
    if (auto e = value(*disc_type, *tag, disc_name, depth + 1))
      return e;
    json::object members_of_branch = base;
    if (const auto* branch = def.at("data").as_object().if_contains(tag->as_string())) {
      const json::value& bt = branch->is_object() && branch->as_object().contains("type")
                                ? branch->as_object().at("type")
                                : *branch;
      if (const auto* bdef = bt.is_string() ? cat_.find(bt.as_string()) : nullptr;
          bdef != nullptr && bdef->contains("struct")) {
        for (const auto& kv : struct_members(*bdef))
          members_of_branch[kv.key()] = kv.value();
      } else if (bt.is_string() && cat_.find(bt.as_string()) == nullptr) {
        return std::nullopt; // branch type from another schema file
      }
    }
    return members(members_of_branch, v, name, depth);
  }

  const catalog& cat_;
};

} // namespace

std::optional<std::string> check_value(const catalog& cat, const json::value& type,
                                       const json::value& value, const std::string& name) {
  return checker{cat}.value(type, value, name, 0);
}

std::optional<std::string> check_arguments(const catalog& cat, const json::object& command,
                                           const json::object& args) {
  const auto* data = command.if_contains("data");
  if (data == nullptr) {
    if (!args.empty())
      return "Parameter '" + std::string{args.begin()->key()} + "' is unexpected";
    return std::nullopt;
  }
  return checker{cat}.value(*data, json::value(args), "", 0);
}

} // namespace ferry::qapi
