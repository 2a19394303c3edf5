#include "agent/transport/sockets.hpp"

#include "common/error.hpp"
#include "common/log.hpp"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>

namespace ferry {

namespace {

caf::expected<sockaddr_un> unix_address(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path)
    return make_ferry_error(errc::invalid_argument, "UNIX socket path '" + path + "' is too long");
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  return addr;
}

using addrinfo_ptr = std::unique_ptr<addrinfo, void (*)(addrinfo*)>;

caf::expected<addrinfo_ptr> resolve(const endpoint& ep, bool passive) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0);
  addrinfo* res = nullptr;
  const std::string port = std::to_string(ep.port);
  if (int rc = ::getaddrinfo(ep.host.c_str(), port.c_str(), &hints, &res); rc != 0)
    return make_ferry_error(errc::invalid_argument, "address resolution failed for " + ep.host +
                                                      ":" + port + ": " + ::gai_strerror(rc));
  return addrinfo_ptr{res, ::freeaddrinfo};
}

} // namespace

caf::expected<bound_socket> listen_on(const endpoint& ep) {
  bound_socket l;
  if (ep.type == endpoint::kind::unix_socket) {
    FERRY_TRY(addr, unix_address(ep.path));
    l.fd.reset(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!l.fd)
      return make_system_error("socket(AF_UNIX)");
    ::unlink(ep.path.c_str());
    if (::bind(l.fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0)
      return make_system_error("Failed to bind socket to " + ep.path);
  } else {
    FERRY_TRY(res, resolve(ep, true));
    l.fd.reset(::socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!l.fd)
      return make_system_error("socket(tcp)");
    int one = 1;
    ::setsockopt(l.fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::bind(l.fd.get(), res->ai_addr, res->ai_addrlen) != 0)
      return make_system_error("Failed to bind socket to " + ep.host + ":" +
                               std::to_string(ep.port));
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    ::getsockname(l.fd.get(), reinterpret_cast<sockaddr*>(&ss), &len);
    l.port = ntohs(ss.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port
                                            : reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  }
  if (::listen(l.fd.get(), 64) != 0)
    return make_system_error("listen");
  return l;
}

void set_link_timeout(int fd, std::chrono::milliseconds timeout) {
  if (timeout.count() <= 0)
    return;
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0 ||
      (ss.ss_family != AF_INET && ss.ss_family != AF_INET6))
    return;
  const auto ms = static_cast<unsigned>(timeout.count());
  // Probes start after a second of silence, one a second: a peer that
  // answers none within the timeout is gone.
  const int idle = 1;
  const int interval = 1;
  const int probes = std::max(1, static_cast<int>(timeout.count() / 1000));
  const int on = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &ms, sizeof ms);
  ::setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on);
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof interval);
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &probes, sizeof probes);
}

void clear_link_timeout(int fd) {
  const unsigned zero = 0;
  const int off = 0;
  ::setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &zero, sizeof zero);
  ::setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &off, sizeof off);
}

std::chrono::milliseconds migration_link_timeout() {
  constexpr std::chrono::milliseconds fallback{10'000};
  const char* env = std::getenv("FERRY_MIGRATION_LINK_TIMEOUT_MS");
  if (env == nullptr || *env == '\0')
    return fallback;
  char* end = nullptr;
  const long long v = std::strtoll(env, &end, 10);
  if (*end != '\0' || v < 0) {
    log::warn("FERRY_MIGRATION_LINK_TIMEOUT_MS='{}' is not a number of ms: using {}", env,
              fallback.count());
    return fallback;
  }
  return std::chrono::milliseconds(v);
}

caf::expected<unique_fd> connect_to(const endpoint& ep, std::chrono::milliseconds link_timeout) {
  if (ep.type == endpoint::kind::unix_socket) {
    FERRY_TRY(addr, unix_address(ep.path));
    unique_fd fd{::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)};
    if (!fd)
      return make_system_error("socket(AF_UNIX)");
    if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0)
      return make_system_error("Failed to connect to '" + ep.path + "'");
    return fd;
  }
  FERRY_TRY(res, resolve(ep, false));
  unique_fd fd{::socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0)};
  if (!fd)
    return make_system_error("socket(tcp)");
  set_link_timeout(fd.get(), link_timeout);
  if (::connect(fd.get(), res->ai_addr, res->ai_addrlen) != 0)
    return make_system_error("Failed to connect to '" + ep.host + ":" + std::to_string(ep.port) +
                             "'");
  int one = 1;
  ::setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

} // namespace ferry
