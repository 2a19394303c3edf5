#pragma once
// Stream sockets on unix paths and TCP host:port, shared by the QMP server
// and the migration transports.

#include "common/unique_fd.hpp"

#include <caf/expected.hpp>

#include <cstdint>
#include <string>

namespace ferry {

// A listening endpoint: unix:PATH or tcp:HOST:PORT (server=on,wait=off).
struct endpoint {
  enum class kind { unix_socket, tcp };
  kind type = kind::unix_socket;
  std::string path; // unix
  std::string host; // tcp
  uint16_t port = 0;
};

struct bound_socket {
  unique_fd fd;
  uint16_t port = 0; // the TCP port actually bound (useful with port 0)
};

// A listening, non-blocking socket. A stale unix socket file is replaced,
// as QEMU does.
caf::expected<bound_socket> listen_on(const endpoint& ep);

// A connected, blocking socket (TCP_NODELAY on TCP).
caf::expected<unique_fd> connect_to(const endpoint& ep);

} // namespace ferry
