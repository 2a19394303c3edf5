#pragma once
// The QMP client of the tests and ferry-qmp: agent/qmp/qmp_connection with
// failures thrown (std::runtime_error), so a test reads as a QMP session.

#include "agent/qmp/qmp_connection.hpp"

#include <boost/json/value.hpp>

#include <chrono>
#include <optional>
#include <string>

namespace ferry::qmp_tool {

class qmp_client {
public:
  // Connects, retrying until `timeout`; throws std::runtime_error on failure.
  explicit qmp_client(const std::string& socket_path,
                      std::chrono::milliseconds timeout = std::chrono::seconds(10));

  const boost::json::value& greeting() const { return conn_.greeting(); }
  // Sends raw text and returns the next non-event message.
  boost::json::value send_raw(const std::string& text);
  boost::json::value execute(const std::string& command, boost::json::object arguments = {});
  void negotiate();
  // The next reply (non-event message), for requests sent together.
  boost::json::value next_reply();
  // The next event (queued or read), or nullopt after `timeout`.
  std::optional<boost::json::value> next_event(std::chrono::milliseconds timeout) {
    return conn_.next_event(timeout);
  }
  // Reads until the peer closes; true if it did within `timeout`.
  bool wait_closed(std::chrono::milliseconds timeout) { return conn_.wait_closed(timeout); }

private:
  qmp_connection conn_;
};

} // namespace ferry::qmp_tool
