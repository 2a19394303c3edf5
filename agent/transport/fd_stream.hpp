#pragma once
// A byte stream on a file descriptor: a connected socket, a pipe to or from
// an exec: command (whose process it owns), or a file.

#include "agent/transport/byte_stream.hpp"
#include "common/unique_fd.hpp"

#include <sys/types.h>

namespace ferry {

class fd_stream final : public byte_stream {
public:
  enum class kind { socket, pipe, file };
  fd_stream(unique_fd fd, kind k, pid_t child = -1);
  ~fd_stream() override; // gives a command a moment to finish, then kills it
  fd_stream(const fd_stream&) = delete;
  fd_stream& operator=(const fd_stream&) = delete;

  caf::expected<void> write_all(std::span<iovec> iov) override;
  caf::expected<size_t> read_some(uint8_t* p, size_t n) override;
  bool wait_readable(int timeout_ms) override;
  void interrupt() override;
  caf::expected<void> finish() override;
  int socket_fd() const override { return kind_ == kind::socket ? fd_.get() : -1; }
  caf::expected<void> enable_zero_copy() override;
  caf::expected<void> write_zero_copy(std::span<iovec> iov) override;
  caf::expected<bool> flush_zero_copy() override;

private:
  caf::expected<void> send_iov(std::span<iovec> iov, int flags);
  // Reads the completions queued so far; false when there were none.
  bool reap_completions();

  unique_fd fd_;
  kind kind_;
  std::atomic<pid_t> child_;
  bool zero_copy_ = false;
  uint32_t zc_sent_ = 0; // MSG_ZEROCOPY sends, each completed by one notification id
  uint32_t zc_done_ = 0; // ids notified
  bool zc_copied_ = false;
};

} // namespace ferry
