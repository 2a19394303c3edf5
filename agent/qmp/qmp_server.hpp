#pragma once
// QMP's transport: listening sockets (unix or tcp), one session per client
// with QEMU's greeting and capability negotiation, requests framed and
// checked, replies and events written back. Runs on its own named thread
// ("qmp"); events may be posted from any thread.

#include "agent/qmp/qmp_monitor.hpp"
#include "agent/transport/sockets.hpp"

#include <caf/expected.hpp>

#include <memory>
#include <string>
#include <vector>

namespace ferry {

class qmp_server {
public:
  // Binds every endpoint (a stale unix socket file is replaced, as QEMU does).
  static caf::expected<std::unique_ptr<qmp_server>> create(const std::vector<endpoint>& endpoints);
  ~qmp_server();

  // Starts the thread; requests go to `monitor`, which must outlive stop().
  void start(qmp_monitor& monitor);
  // Sends pending output (best effort, briefly), closes everything, joins.
  void stop();
  // Queues an event line for every negotiated client. Thread-safe.
  void broadcast(std::string line);
  // The TCP port actually bound for endpoint i (useful with port 0).
  uint16_t bound_port(size_t i) const;

  struct impl;

private:
  explicit qmp_server(std::unique_ptr<impl> p);
  std::unique_ptr<impl> impl_;
};

} // namespace ferry
