#pragma once
// QMP's message shapes as QEMU writes them: the greeting, command replies,
// errors with QEMU's error classes, and timestamped events. Each function
// returns one line ready to send (JSON followed by CRLF, as QEMU does).

#include <boost/json/object.hpp>
#include <boost/json/value.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ferry::qmp {

enum class error_class {
  generic_error,     // GenericError
  command_not_found, // CommandNotFound
  device_not_active, // DeviceNotActive
  device_not_found,  // DeviceNotFound
  kvm_missing_cap,   // KVMMissingCap
};

std::string_view to_string(error_class c);

struct version {
  int major = 9;
  int minor = 1;
  int micro = 0;
  std::string package = " (ferry)";
};

// `capabilities`: what a client may enable with qmp_capabilities ("oob").
std::string greeting(const version& v, const std::vector<std::string>& capabilities);
// `id` is echoed verbatim when the command carried one.
std::string reply(boost::json::value ret, const boost::json::value* id);
std::string error(error_class c, std::string_view desc, const boost::json::value* id);
// Timestamp from the realtime clock, as QEMU's events carry it.
std::string event(std::string_view name, std::optional<boost::json::object> data = std::nullopt);

} // namespace ferry::qmp
