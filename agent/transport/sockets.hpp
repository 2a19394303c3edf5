#pragma once
// Stream sockets on unix paths and TCP host:port, shared by the QMP server
// and the migration transports.

#include "common/unique_fd.hpp"

#include <caf/expected.hpp>

#include <chrono>
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

// A connected, blocking socket (TCP_NODELAY on TCP). With a link timeout,
// a TCP link that goes silent fails within it (set before connecting, so
// an unanswered connect fails too).
caf::expected<unique_fd> connect_to(const endpoint& ep,
                                    std::chrono::milliseconds link_timeout = {});

// Makes a TCP socket notice a silent peer within `timeout`: unacknowledged
// data (TCP_USER_TIMEOUT) and an idle link (keepalive probes every second
// once idle for a second) both end in ETIMEDOUT. Not TCP: nothing to do.
void set_link_timeout(int fd, std::chrono::milliseconds timeout);
// No kernel timeout on the TCP socket `fd` any more (user timeout, keepalive):
// a silent link is never aborted, so the peer never sees it reset later.
void clear_link_timeout(int fd);

// How long a migration link may stay silent before both sides fail the
// migration: FERRY_MIGRATION_LINK_TIMEOUT_MS (default 10 s; 0 turns the
// watch off).
std::chrono::milliseconds migration_link_timeout();

} // namespace ferry
