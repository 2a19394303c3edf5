#pragma once
// Stream sockets on unix paths and TCP host:port, shared by the QMP server
// and the migration transports.

#include "agent/unique_fd.hpp"
#include "agent/vm_config.hpp"

#include <caf/expected.hpp>

#include <cstdint>

namespace ferry {

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
