#include "agent/qmp/qmp_server.hpp"

#include "agent/transport/sockets.hpp"
#include "common/error.hpp"
#include "common/unique_fd.hpp"
#include "protocol/qapi_catalog.hpp"
#include "protocol/qmp_framing.hpp"
#include "protocol/qmp_request.hpp"
#include "protocol/qmp_wire.hpp"

#include <poll.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <deque>
#include <list>
#include <mutex>
#include <thread>
#include <variant>

namespace ferry {

namespace {

// A client that stops reading is cut off rather than growing our memory.
constexpr size_t max_pending_output = 16u << 20;

struct session {
  unique_fd fd;
  qmp::framer framer;
  std::string out;
  bool negotiated = false;
  bool oob = false; // out-of-band execution enabled by qmp_capabilities
  bool closing = false;
};

struct listener {
  unique_fd fd;
  endpoint ep;
  uint16_t port = 0;
};

caf::expected<listener> bind_endpoint(const endpoint& ep) {
  FERRY_TRY(b, listen_on(ep));
  return listener{std::move(b.fd), ep, b.port};
}

// qmp_capabilities' arguments: whether `oob` is enabled, or QEMU's error.
std::variant<bool, std::string> negotiate(const boost::json::object& args) {
  bool oob = false;
  for (const auto& kv : args) {
    if (kv.key() != "enable")
      return "Parameter '" + std::string{kv.key()} + "' is unexpected";
    const auto* arr = kv.value().if_array();
    if (arr == nullptr)
      return std::string{"Invalid parameter type for 'enable', expected: array"};
    for (size_t i = 0; i < arr->size(); ++i) {
      const auto name = "enable[" + std::to_string(i) + "]";
      if (!(*arr)[i].is_string())
        return "Invalid parameter type for '" + name + "', expected: string";
      if ((*arr)[i].as_string() != "oob")
        return "Parameter '" + name + "' does not accept value '" +
               std::string{(*arr)[i].as_string()} + "'";
      oob = true;
    }
  }
  return oob;
}

} // namespace

struct qmp_server::impl {
  std::vector<listener> listeners;
  std::list<session> sessions;
  unique_fd wake;
  qmp_monitor* monitor = nullptr;
  std::thread thread;
  std::mutex mtx; // guards events and quit
  std::deque<std::string> events;
  bool quit = false;

  void run();
  void accept_from(listener& l);
  void read_from(session& s);
  void handle(session& s, const qmp::framed& f);
  void flush(session& s);
  void deliver_events();
};

void qmp_server::impl::accept_from(listener& l) {
  for (;;) {
    int fd = ::accept4(l.fd.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0)
      return;
    auto& s = sessions.emplace_back();
    s.fd.reset(fd);
    s.out = qmp::greeting({}, {"oob"});
    flush(s);
  }
}

void qmp_server::impl::handle(session& s, const qmp::framed& f) {
  if (const auto* err = std::get_if<std::string>(&f)) {
    s.out += qmp::error(qmp::error_class::generic_error, *err, nullptr);
    return;
  }
  auto parsed = qmp::parse_request(std::get<boost::json::value>(f));
  if (auto* bad = std::get_if<qmp::envelope_error>(&parsed)) {
    s.out += qmp::error(qmp::error_class::generic_error, bad->desc, bad->id ? &*bad->id : nullptr);
    return;
  }
  const auto& req = std::get<qmp::request>(parsed);
  const boost::json::value* id = req.id ? &*req.id : nullptr;
  if (req.oob) {
    // Out-of-band requests need the capability, and a command the schema
    // marks allow-oob. Commands run as soon as they are read here, so an OOB
    // one never waits behind queued in-band work.
    if (!s.oob) {
      s.out += qmp::error(qmp::error_class::generic_error,
                          "QMP input member 'exec-oob' is unexpected", id);
      return;
    }
    const auto* def = qapi::catalog::migration().find(req.command);
    const auto* allow = def != nullptr ? def->if_contains("allow-oob") : nullptr;
    if (allow == nullptr || !allow->is_bool() || !allow->as_bool()) {
      s.out += qmp::error(qmp::error_class::generic_error,
                          "The command " + req.command + " does not support OOB", id);
      return;
    }
  }
  if (!s.negotiated) {
    if (req.command != "qmp_capabilities") {
      s.out += qmp::error(qmp::error_class::command_not_found,
                          "Expecting capabilities negotiation with 'qmp_capabilities'", id);
      return;
    }
    auto enabled = negotiate(req.arguments);
    if (auto* bad = std::get_if<std::string>(&enabled)) {
      s.out += qmp::error(qmp::error_class::generic_error, *bad, id);
      return;
    }
    s.oob = std::get<bool>(enabled);
    s.negotiated = true;
    s.out += qmp::reply(boost::json::object{}, id);
    return;
  }
  if (req.command == "qmp_capabilities") {
    s.out += qmp::error(qmp::error_class::command_not_found,
                        "Capabilities negotiation is already complete, command ignored", id);
    return;
  }
  auto result = monitor->execute(req.command, req.arguments);
  if (auto* fail = std::get_if<qmp_failure>(&result))
    s.out += qmp::error(fail->cls, fail->desc, id);
  else
    s.out += qmp::reply(std::get<boost::json::value>(std::move(result)), id);
}

void qmp_server::impl::read_from(session& s) {
  char buf[16384];
  for (;;) {
    const ssize_t n = ::recv(s.fd.get(), buf, sizeof buf, 0);
    if (n == 0) {
      s.closing = true;
      return;
    }
    if (n < 0) {
      if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
        s.closing = true;
      return;
    }
    for (const auto& f : s.framer.feed({buf, static_cast<size_t>(n)})) {
      handle(s, f);
      // Events raised by this command (STOP, SHUTDOWN...) follow its reply.
      flush(s);
      deliver_events();
    }
  }
}

void qmp_server::impl::flush(session& s) {
  while (!s.out.empty() && !s.closing) {
    const ssize_t n = ::send(s.fd.get(), s.out.data(), s.out.size(), MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK)
        break;
      s.closing = true;
      return;
    }
    s.out.erase(0, static_cast<size_t>(n));
  }
  if (s.out.size() > max_pending_output)
    s.closing = true;
}

void qmp_server::impl::deliver_events() {
  std::deque<std::string> pending;
  {
    std::lock_guard lk{mtx};
    pending.swap(events);
  }
  for (const auto& e : pending)
    for (auto& s : sessions)
      if (s.negotiated && !s.closing) {
        s.out += e;
        flush(s);
      }
}

void qmp_server::impl::run() {
  ::pthread_setname_np(::pthread_self(), "qmp");
  std::vector<pollfd> fds;
  for (;;) {
    {
      std::lock_guard lk{mtx};
      if (quit)
        break;
    }
    fds.clear();
    fds.push_back({wake.get(), POLLIN, 0});
    for (auto& l : listeners)
      fds.push_back({l.fd.get(), POLLIN, 0});
    for (auto& s : sessions)
      fds.push_back({s.fd.get(), static_cast<short>(POLLIN | (s.out.empty() ? 0 : POLLOUT)), 0});
    if (::poll(fds.data(), fds.size(), -1) < 0 && errno != EINTR)
      break;
    if (fds[0].revents & POLLIN) {
      uint64_t v;
      (void) !::read(wake.get(), &v, sizeof v);
    }
    deliver_events();
    size_t i = 1;
    for (auto& l : listeners)
      if (fds[i++].revents & POLLIN)
        accept_from(l);
    // Sessions accepted in this round have no pollfd yet; only the first
    // `polled` sessions are checked.
    const size_t polled = fds.size() - i;
    size_t k = 0;
    for (auto it = sessions.begin(); it != sessions.end() && k < polled; ++k, ++i) {
      auto& s = *it;
      const short re = fds[i].revents;
      if (re & (POLLIN | POLLHUP | POLLERR))
        read_from(s);
      if (re & POLLOUT)
        flush(s);
      it = s.closing ? sessions.erase(it) : std::next(it);
    }
  }
  // Last words (a quit's reply and SHUTDOWN event) get a short chance to go out.
  deliver_events();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(1);
  for (auto& s : sessions) {
    while (!s.out.empty() && !s.closing && std::chrono::steady_clock::now() < deadline) {
      pollfd p{s.fd.get(), POLLOUT, 0};
      ::poll(&p, 1, 50);
      flush(s);
    }
  }
  sessions.clear();
}

caf::expected<std::unique_ptr<qmp_server>>
qmp_server::create(const std::vector<endpoint>& endpoints) {
  auto p = std::make_unique<impl>();
  for (const auto& ep : endpoints) {
    auto l = bind_endpoint(ep);
    if (!l)
      return l.error();
    p->listeners.push_back(std::move(*l));
  }
  p->wake.reset(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (!p->wake)
    return make_system_error("eventfd");
  return std::unique_ptr<qmp_server>{new qmp_server(std::move(p))};
}

qmp_server::qmp_server(std::unique_ptr<impl> p) : impl_(std::move(p)) {}

qmp_server::~qmp_server() {
  stop();
}

void qmp_server::start(qmp_monitor& monitor) {
  impl_->monitor = &monitor;
  impl_->thread = std::thread{[this] { impl_->run(); }};
}

void qmp_server::stop() {
  {
    std::lock_guard lk{impl_->mtx};
    impl_->quit = true;
  }
  const uint64_t one = 1;
  (void) !::write(impl_->wake.get(), &one, sizeof one);
  if (impl_->thread.joinable())
    impl_->thread.join();
  for (auto& l : impl_->listeners)
    if (l.ep.type == endpoint::kind::unix_socket && l.fd) {
      ::unlink(l.ep.path.c_str());
      l.fd.reset();
    }
}

void qmp_server::broadcast(std::string line) {
  {
    std::lock_guard lk{impl_->mtx};
    impl_->events.push_back(std::move(line));
  }
  const uint64_t one = 1;
  (void) !::write(impl_->wake.get(), &one, sizeof one);
}

uint16_t qmp_server::bound_port(size_t i) const {
  return impl_->listeners.at(i).port;
}

} // namespace ferry
