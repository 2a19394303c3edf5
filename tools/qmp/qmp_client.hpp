#pragma once
// A blocking QMP client (tests, ferry-qmp): connects to a unix socket (waiting for it
// to appear), reads the greeting, sends commands and separates replies from
// events.

#include <boost/json/value.hpp>

#include <chrono>
#include <deque>
#include <optional>
#include <string>

namespace ferry::qmp_tool {

class qmp_client {
public:
  // Connects, retrying until `timeout`; throws std::runtime_error on failure.
  explicit qmp_client(const std::string& socket_path,
                      std::chrono::milliseconds timeout = std::chrono::seconds(10));
  ~qmp_client();
  qmp_client(const qmp_client&) = delete;
  qmp_client& operator=(const qmp_client&) = delete;

  const boost::json::value& greeting() const { return greeting_; }
  // Sends raw text and returns the next non-event message.
  boost::json::value send_raw(const std::string& text);
  boost::json::value execute(const std::string& command, boost::json::object arguments = {});
  void negotiate();
  // The next reply (non-event message), for requests sent together.
  boost::json::value next_reply();
  // The next event (queued or read), or nullopt after `timeout`.
  std::optional<boost::json::value> next_event(std::chrono::milliseconds timeout);
  // Reads until the peer closes; true if it did within `timeout`.
  bool wait_closed(std::chrono::milliseconds timeout);

private:
  std::optional<boost::json::value> read_message(std::chrono::milliseconds timeout);

  int fd_ = -1;
  std::string buf_;
  boost::json::value greeting_;
  std::deque<boost::json::value> events_;
};

} // namespace ferry::qmp_tool
