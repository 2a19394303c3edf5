#pragma once
// Errors of the wire-format layer. Values are pinned: never reuse one.

#include <caf/error.hpp>
#include <caf/make_message.hpp>
#include <caf/message.hpp>

#include <cstdint>
#include <string>

namespace ferry {

enum class protocol_errc : uint8_t {
  // Input does not follow the format's grammar or limits.
  malformed = 1,
};

} // namespace ferry

CAF_ERROR_CODE_ENUM(ferry::protocol_errc, "ferry_wire")

namespace ferry {

inline caf::error make_protocol_error(protocol_errc code, std::string desc) {
  return caf::make_error(code, std::move(desc));
}

} // namespace ferry
