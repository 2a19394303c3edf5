#include "protocol/qmp_wire.hpp"

#include <boost/json/serialize.hpp>

#include <chrono>

namespace ferry::qmp {

namespace json = boost::json;

namespace {

std::string line(const json::object& o) {
  std::string s = json::serialize(o);
  s += "\r\n";
  return s;
}

} // namespace

std::string_view to_string(error_class c) {
  switch (c) {
    case error_class::generic_error:
      return "GenericError";
    case error_class::command_not_found:
      return "CommandNotFound";
    case error_class::device_not_active:
      return "DeviceNotActive";
    case error_class::device_not_found:
      return "DeviceNotFound";
    case error_class::kvm_missing_cap:
      return "KVMMissingCap";
  }
  return "GenericError";
}

std::string greeting(const version& v, const std::vector<std::string>& capabilities) {
  json::object ver{{"qemu", {{"major", v.major}, {"minor", v.minor}, {"micro", v.micro}}},
                   {"package", v.package}};
  json::object qmp{{"version", std::move(ver)},
                   {"capabilities", json::array(capabilities.begin(), capabilities.end())}};
  return line({{"QMP", std::move(qmp)}});
}

std::string reply(json::value ret, const json::value* id) {
  json::object o{{"return", std::move(ret)}};
  if (id != nullptr)
    o["id"] = *id;
  return line(o);
}

std::string error(error_class c, std::string_view desc, const json::value* id) {
  json::object o{{"error", {{"class", to_string(c)}, {"desc", desc}}}};
  if (id != nullptr)
    o["id"] = *id;
  return line(o);
}

std::string event(std::string_view name, std::optional<json::object> data) {
  const auto now = std::chrono::system_clock::now().time_since_epoch();
  const auto us = std::chrono::duration_cast<std::chrono::microseconds>(now).count();
  json::object o{{"event", name},
                 {"timestamp", {{"seconds", us / 1000000}, {"microseconds", us % 1000000}}}};
  if (data)
    o["data"] = std::move(*data);
  return line(o);
}

} // namespace ferry::qmp
