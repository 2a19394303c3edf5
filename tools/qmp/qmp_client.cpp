#include "tools/qmp/qmp_client.hpp"

#include <boost/json.hpp>

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <stdexcept>
#include <thread>

namespace ferry::qmp_tool {

namespace json = boost::json;

qmp_client::qmp_client(const std::string& path, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
  for (;;) {
    fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0)
      break;
    ::close(fd_);
    fd_ = -1;
    if (std::chrono::steady_clock::now() > deadline)
      throw std::runtime_error("cannot connect to QMP socket " + path);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  auto g = read_message(timeout);
  if (!g)
    throw std::runtime_error("no QMP greeting");
  greeting_ = *g;
}

qmp_client::~qmp_client() {
  if (fd_ >= 0)
    ::close(fd_);
}

std::optional<json::value> qmp_client::read_message(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    if (auto nl = buf_.find('\n'); nl != std::string::npos) {
      std::string line = buf_.substr(0, nl);
      buf_.erase(0, nl + 1);
      if (line.find_first_not_of(" \r\t") == std::string::npos)
        continue;
      return json::parse(line);
    }
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0)
      return std::nullopt;
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0)
      return std::nullopt;
    char tmp[65536];
    const ssize_t n = ::recv(fd_, tmp, sizeof tmp, 0);
    if (n <= 0)
      return std::nullopt;
    buf_.append(tmp, static_cast<size_t>(n));
  }
}

json::value qmp_client::send_raw(const std::string& text) {
  if (::send(fd_, text.data(), text.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(text.size()))
    throw std::runtime_error("QMP send failed");
  return next_reply();
}

json::value qmp_client::next_reply() {
  for (;;) {
    auto m = read_message(std::chrono::seconds(30));
    if (!m)
      throw std::runtime_error("no QMP reply");
    if (m->as_object().contains("event")) {
      events_.push_back(std::move(*m));
      continue;
    }
    return *m;
  }
}

json::value qmp_client::execute(const std::string& command, json::object arguments) {
  json::object req{{"execute", command}};
  if (!arguments.empty())
    req["arguments"] = std::move(arguments);
  return send_raw(json::serialize(req) + "\n");
}

void qmp_client::negotiate() {
  auto r = execute("qmp_capabilities");
  if (!r.as_object().contains("return"))
    throw std::runtime_error("qmp_capabilities failed: " + json::serialize(r));
}

std::optional<json::value> qmp_client::next_event(std::chrono::milliseconds timeout) {
  if (!events_.empty()) {
    auto e = std::move(events_.front());
    events_.pop_front();
    return e;
  }
  auto m = read_message(timeout);
  return m;
}

bool qmp_client::wait_closed(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  char tmp[4096];
  while (std::chrono::steady_clock::now() < deadline) {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, 50) > 0) {
      const ssize_t n = ::recv(fd_, tmp, sizeof tmp, 0);
      if (n == 0)
        return true;
      if (n < 0)
        return true;
      buf_.append(tmp, static_cast<size_t>(n));
    }
  }
  return false;
}

} // namespace ferry::qmp_tool
