#include "agent/qmp/qmp_connection.hpp"

#include "common/error.hpp"

#include <boost/json.hpp>

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <thread>

namespace ferry {

namespace json = boost::json;
using namespace std::chrono_literals;

namespace {

constexpr auto reply_timeout = 30s;

caf::error closed_error() {
  return make_ferry_error(errc::system_error, "QMP connection closed");
}

} // namespace

caf::expected<qmp_connection> qmp_connection::connect(const std::string& path,
                                                      std::chrono::milliseconds timeout,
                                                      const std::function<bool()>& gone) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  sockaddr_un addr{};
  if (path.size() >= sizeof addr.sun_path)
    return make_ferry_error(errc::invalid_argument, "QMP socket path too long: " + path);
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size());
  // A guest just started opens its socket within tens of milliseconds, and
  // whoever waits for it (a migration's target being created) waits on the
  // critical path: look every 2 ms (a refused connect costs microseconds).
  for (;;) {
    unique_fd fd{::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)};
    if (!fd)
      return make_system_error("socket");
    if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
      qmp_connection c{std::move(fd)};
      auto g = c.read_message(timeout);
      if (!g)
        return g.error();
      if (!*g || !(*g)->is_object() || !(*g)->as_object().contains("QMP"))
        return make_ferry_error(errc::system_error, "no QMP greeting on " + path);
      c.greeting_ = std::move(**g);
      return c;
    }
    if (gone && gone())
      return make_ferry_error(errc::system_error,
                              "the process ended before its QMP monitor at " + path + " answered");
    if (std::chrono::steady_clock::now() > deadline)
      return make_ferry_error(errc::system_error, "cannot connect to QMP socket " + path);
    std::this_thread::sleep_for(2ms);
  }
}

caf::expected<std::optional<json::value>>
qmp_connection::read_message(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    if (auto nl = buf_.find('\n'); nl != std::string::npos) {
      std::string line = buf_.substr(0, nl);
      buf_.erase(0, nl + 1);
      if (line.find_first_not_of(" \r\t") == std::string::npos)
        continue;
      boost::system::error_code ec;
      auto v = json::parse(line, ec);
      if (ec || !v.is_object()) {
        closed_ = true; // the stream cannot be trusted past a bad line
        return make_ferry_error(errc::invalid_argument, "QMP peer sent a line that is not a "
                                                        "JSON object");
      }
      return std::optional<json::value>{std::move(v)};
    }
    if (buf_.size() > max_line) {
      closed_ = true;
      return make_ferry_error(errc::invalid_argument, "QMP peer sent a line over 16 MiB");
    }
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0)
      return std::optional<json::value>{};
    pollfd p{fd_.get(), POLLIN, 0};
    const int ready = ::poll(&p, 1, static_cast<int>(left.count()));
    if (ready < 0 && errno != EINTR)
      return make_system_error("poll");
    if (ready <= 0)
      continue;
    char tmp[65536];
    const ssize_t n = ::recv(fd_.get(), tmp, sizeof tmp, 0);
    if (n <= 0) {
      closed_ = true;
      return closed_error();
    }
    buf_.append(tmp, static_cast<size_t>(n));
  }
}

caf::expected<json::value> qmp_connection::send_raw(const std::string& text) {
  if (::send(fd_.get(), text.data(), text.size(), MSG_NOSIGNAL) !=
      static_cast<ssize_t>(text.size()))
    return make_system_error("QMP send");
  return next_reply();
}

caf::expected<json::value> qmp_connection::next_reply() {
  for (;;) {
    auto m = read_message(reply_timeout);
    if (!m)
      return m.error();
    if (!*m)
      return make_ferry_error(errc::system_error, "no QMP reply within 30 s");
    if ((*m)->as_object().contains("event")) {
      events_.push_back(std::move(**m));
      continue;
    }
    return std::move(**m);
  }
}

caf::expected<json::value> qmp_connection::execute(const std::string& command,
                                                   json::object arguments) {
  json::object req{{"execute", command}};
  if (!arguments.empty())
    req["arguments"] = std::move(arguments);
  return send_raw(json::serialize(req) + "\n");
}

caf::expected<void> qmp_connection::negotiate() {
  auto r = execute("qmp_capabilities");
  if (!r)
    return r.error();
  if (!r->as_object().contains("return"))
    return make_ferry_error(errc::system_error, "qmp_capabilities failed: " + json::serialize(*r));
  return {};
}

std::optional<json::value> qmp_connection::next_event(std::chrono::milliseconds timeout) {
  if (!events_.empty()) {
    auto e = std::move(events_.front());
    events_.pop_front();
    return e;
  }
  auto m = read_message(timeout);
  if (!m || !*m)
    return std::nullopt;
  return std::move(**m);
}

bool qmp_connection::wait_closed(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  char tmp[4096];
  while (std::chrono::steady_clock::now() < deadline) {
    pollfd p{fd_.get(), POLLIN, 0};
    if (::poll(&p, 1, 50) > 0) {
      const ssize_t n = ::recv(fd_.get(), tmp, sizeof tmp, 0);
      if (n <= 0)
        return true;
      if (buf_.size() < max_line)
        buf_.append(tmp, static_cast<size_t>(n));
    }
  }
  return false;
}

} // namespace ferry
