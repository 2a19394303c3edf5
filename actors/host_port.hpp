#pragma once
// "HOST:PORT" addresses of the control plane (config files, ferryctl).

#include <cstdint>
#include <optional>
#include <string>

namespace ferry {

struct host_port {
  std::string host;
  uint16_t port = 0;
};

// "HOST:PORT", an IPv6 host in brackets ("[::1]:47200"); nullopt if malformed.
std::optional<host_port> parse_host_port(const std::string& text);

} // namespace ferry
