#pragma once
// One byte stream of a migration — a socket, a pipe to or from an exec:
// command, or a file — carrying framed records (protocol/migration_stream).
// A channel is used by one thread at a time; interrupt() may be called from
// any thread to unblock it (cancel, failure of a sibling channel).

#include "agent/transport/migration_address.hpp"
#include "agent/transport/migration_tls.hpp"
#include "common/unique_fd.hpp"
#include "protocol/migration_stream.hpp"

#include <caf/expected.hpp>

#include <sys/types.h>
#include <sys/uio.h>

#include <atomic>
#include <memory>
#include <span>
#include <vector>

namespace ferry {

class migration_channel {
public:
  enum class kind { socket, pipe, file };
  migration_channel(unique_fd fd, kind k, pid_t child = -1);
  ~migration_channel();
  migration_channel(const migration_channel&) = delete;
  migration_channel& operator=(const migration_channel&) = delete;

  // One record whose payload is the concatenation of `parts`.
  caf::expected<void> send(mig::record_type type, std::span<const iovec> parts);
  caf::expected<void> send(mig::record_type type, std::span<const uint8_t> payload);
  // The next record; its checked payload lands in `payload`.
  caf::expected<mig::record_header> receive(std::vector<uint8_t>& payload);

  // Runs TLS over this (socket) channel from now on.
  caf::expected<void> start_tls(const tls_context& ctx);
  // The TLS peer's certificate subject ("" without TLS or certificate).
  std::string peer_dn() const { return tls_ ? tls_->peer_dn() : std::string{}; }

  void interrupt();
  // The writing side is done: closes the stream and, for an exec: command,
  // waits for it to exit — the migration is complete only once the command
  // has taken everything. A command failing is an error.
  caf::expected<void> finish();
  uint64_t bytes_sent() const { return sent_.load(std::memory_order_relaxed); }
  uint64_t bytes_received() const { return received_.load(std::memory_order_relaxed); }

private:
  caf::expected<void> write_all(std::span<iovec> iov);
  caf::expected<void> read_exact(uint8_t* p, size_t n);

  unique_fd fd_;
  tls_session_ptr tls_;
  kind kind_;
  std::atomic<pid_t> child_;
  std::atomic<bool> interrupted_{false};
  std::atomic<uint64_t> sent_{0};
  std::atomic<uint64_t> received_{0};
};

// The source's side: connects (tcp, unix), starts the command with its stdin
// on a pipe (exec) or opens the file for writing at its offset (file).
caf::expected<std::unique_ptr<migration_channel>> open_outgoing(const migration_address& a);

// The destination's side.
class migration_listener {
public:
  static caf::expected<std::unique_ptr<migration_listener>> create(const migration_address& a);
  // The next channel; fails after `timeout_ms` or when interrupted. exec:
  // and file: yield their one stream once.
  caf::expected<std::unique_ptr<migration_channel>> accept(int timeout_ms);
  void interrupt() { interrupted_ = true; }
  // The address with the port actually bound.
  const migration_address& address() const { return addr_; }

private:
  migration_address addr_;
  unique_fd fd_;
  pid_t child_ = -1;
  bool used_ = false;
  std::atomic<bool> interrupted_{false};
};

} // namespace ferry
