#pragma once
// "0x1f" renderings of addresses and register values for error messages.

#include <cstdint>
#include <cstdio>
#include <string>

namespace ferry {

inline std::string to_hex(uint64_t v) {
  char buf[24];
  (void) std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(v));
  return buf;
}

} // namespace ferry
