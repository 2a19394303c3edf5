#pragma once
// The client side of one QMP monitor socket, without exceptions: connects to a
// unix socket (waiting for it to appear), reads the greeting, sends commands
// and keeps events apart from replies. The daemon relays its guests' QMP
// through it; the test client and ferry-qmp wrap it. The peer is untrusted:
// lines are capped, bad JSON is an error, every wait has a deadline.

#include "common/unique_fd.hpp"

#include <boost/json/object.hpp>
#include <boost/json/value.hpp>
#include <caf/expected.hpp>

#include <chrono>
#include <deque>
#include <functional>
#include <optional>
#include <string>

namespace ferry {

class qmp_connection {
public:
  // The longest line accepted from a monitor (a query-migrate or query-jobs
  // answer is a few KiB; the schema's query-qmp-schema is the largest).
  static constexpr size_t max_line = 16u << 20;

  // Connects, retrying until `timeout`, and reads the greeting. Gives up at
  // once when `gone` says the monitor's process has ended.
  static caf::expected<qmp_connection> connect(const std::string& socket_path,
                                               std::chrono::milliseconds timeout,
                                               const std::function<bool()>& gone = {});

  const boost::json::value& greeting() const { return greeting_; }
  // Sends raw text and returns the next reply (a non-event message).
  caf::expected<boost::json::value> send_raw(const std::string& text);
  caf::expected<boost::json::value> execute(const std::string& command,
                                            boost::json::object arguments = {});
  // qmp_capabilities; an error reply is an error.
  caf::expected<void> negotiate();
  // The next reply, for requests sent together.
  caf::expected<boost::json::value> next_reply();
  // The next event (queued or read); nullopt after `timeout` or when closed.
  std::optional<boost::json::value> next_event(std::chrono::milliseconds timeout);
  // Reads until the peer closes; true if it did within `timeout`.
  bool wait_closed(std::chrono::milliseconds timeout);
  // The peer closed the connection (or sent what ends it).
  bool closed() const { return closed_; }

private:
  explicit qmp_connection(unique_fd fd) : fd_(std::move(fd)) {}
  // A message, nullopt on timeout, an error when closed or malformed.
  caf::expected<std::optional<boost::json::value>> read_message(std::chrono::milliseconds timeout);

  unique_fd fd_;
  std::string buf_;
  boost::json::value greeting_;
  std::deque<boost::json::value> events_;
  bool closed_ = false;
};

} // namespace ferry
