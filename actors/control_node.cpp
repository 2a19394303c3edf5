#include "actors/control_node.hpp"

#include "actors/host_interface.hpp"

#include <caf/io/middleman.hpp>
#include <caf/openssl/manager.hpp>

#include <csignal>

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
  // With certificate, key and CA all set, CAF's openssl module verifies the
  // peer against the CA whether it accepted or opened the connection.
  cfg.openssl_certificate = id.cert_file;
  cfg.openssl_key = id.key_file;
  cfg.openssl_cafile = id.ca_file;
  add_control_plane_types(cfg);
}

} // namespace ferry
