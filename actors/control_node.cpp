#include "actors/control_node.hpp"

#include "actors/host_interface.hpp"

#include <caf/atom.hpp>
#include <caf/io/middleman.hpp>
#include <caf/openssl/manager.hpp>

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <cstring>

namespace ferry {

stop_signals::stop_signals() {
  sigemptyset(&set_);
  sigaddset(&set_, SIGINT);
  sigaddset(&set_, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set_, nullptr);
  std::signal(SIGPIPE, SIG_IGN);
}

int stop_signals::wait() const {
  int sig = 0;
  // sigwait only fails on an invalid set; EINTR is not among its errors,
  // but loop anyway rather than report a signal that never came.
  while (sigwait(&set_, &sig) != 0) {
  }
  return sig;
}

void configure_control_plane(caf::actor_system_config& cfg, const tls_identity& id) {
  cfg.load<caf::io::middleman>();
  cfg.load<caf::openssl::manager>();
  // Control traffic is light and bursty. CAF's default work-stealing workers
  // poll with 50 us sleeps for 25 ms after every message, so a host with a
  // few hundred guests (each relay and timer a message) kept its workers
  // polling all the time: 15% of a core per idle daemon, 10 daemons on one
  // machine saturating it. Shared queue workers sleep on a condition
  // variable instead.
  cfg.set("scheduler.policy", caf::atom("sharing"));
  // A peer that goes silent (host gone, link cut) is noticed within a few
  // seconds: CAF's middleman sends a heartbeat every interval and closes a
  // connection with nothing heard for `missed_heartbeats` of them; its
  // actors then go down (the orchestrator marks the host down and settles
  // its jobs).
  cfg.set("middleman.heartbeat-interval", caf::timespan{heartbeat_interval});
  cfg.set("middleman.connection-timeout", caf::timespan{heartbeat_interval * missed_heartbeats});
  // With certificate, key and CA all set, CAF's openssl module verifies the
  // peer against the CA whether it accepted or opened the connection.
  cfg.openssl_certificate = id.cert_file;
  cfg.openssl_key = id.key_file;
  cfg.openssl_cafile = id.ca_file;
  add_control_plane_types(cfg);
}

bool notify_service_manager(const std::string& state) {
  const char* path = std::getenv("NOTIFY_SOCKET");
  if (path == nullptr || *path == '\0')
    return true;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  const size_t len = std::strlen(path);
  if (len >= sizeof addr.sun_path || (path[0] != '/' && path[0] != '@'))
    return false;
  std::memcpy(addr.sun_path, path, len);
  if (path[0] == '@')
    addr.sun_path[0] = '\0'; // an abstract socket
  const int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return false;
  const auto addr_len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + len);
  const auto sent = ::sendto(fd, state.data(), state.size(), MSG_NOSIGNAL,
                             reinterpret_cast<const sockaddr*>(&addr), addr_len);
  ::close(fd);
  return sent == static_cast<ssize_t>(state.size());
}

} // namespace ferry
