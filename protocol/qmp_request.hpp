#pragma once
// One QMP request, checked the way QEMU checks the envelope: a JSON object
// with a string "execute" (or "exec-oob"), an optional object "arguments",
// an optional "id" of any type, and nothing else.

#include <boost/json/object.hpp>
#include <boost/json/value.hpp>

#include <optional>
#include <string>
#include <variant>

namespace ferry::qmp {

struct request {
  std::string command;
  boost::json::object arguments;
  std::optional<boost::json::value> id;
  bool oob = false; // sent as exec-oob
};

// The request, or QEMU's GenericError text for a malformed envelope (with
// the id when one could be read, so the error can still echo it).
struct envelope_error {
  std::string desc;
  std::optional<boost::json::value> id;
};

std::variant<request, envelope_error> parse_request(const boost::json::value& v);

} // namespace ferry::qmp
