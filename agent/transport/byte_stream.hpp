#pragma once
// The seam under every migration channel: a bidirectional (or one-way) byte
// stream. Implementations: fd_stream (socket, pipe to or from an exec:
// command, file), tls_stream (TLS 1.3 as a layer over a socket stream) and
// loopback_stream (in memory, with injected short reads, resets and stalls,
// for tests). A stream is used by one thread at a time; interrupt() may be
// called from any thread to unblock it.

#include <caf/expected.hpp>

#include <sys/uio.h>

#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

namespace ferry {

class byte_stream {
public:
  virtual ~byte_stream() = default;
  // Writes every byte of `iov` (which it may consume) or fails.
  virtual caf::expected<void> write_all(std::span<iovec> iov) = 0;
  // Up to `n` bytes (> 0), 0 at end of stream, or an error.
  virtual caf::expected<size_t> read_some(uint8_t* p, size_t n) = 0;
  // write_all, where the pieces from `placed_from` on are data the reader
  // takes with read_placed (pages bound for guest RAM). Only a TLS stream
  // treats them apart (sealed_records: bulk records).
  virtual caf::expected<void> write_placed(std::span<iovec> iov, size_t placed_from) {
    (void) placed_from;
    return write_all(iov);
  }
  // read_some into memory that does not act on what it holds before the
  // stream's end is judged (an incoming guest's RAM): a TLS stream may hand
  // over a bulk record's bytes before its tag is checked, and fails the
  // read that completes the record if the check fails.
  virtual caf::expected<size_t> read_placed(uint8_t* p, size_t n) { return read_some(p, n); }
  // True once a read would not block (data, end of stream or an error)
  // within `timeout_ms`; lets a side watch an idle channel for its peer's end.
  virtual bool wait_readable(int timeout_ms) = 0;
  // Unblocks any read or write, now and later, and tells the peer.
  virtual void interrupt() = 0;
  bool interrupted() const { return interrupted_; }
  // The writer is done: ends the stream; for an exec: command, waits until
  // it has taken everything (a command failing is an error).
  virtual caf::expected<void> finish() { return {}; }
  // The connected socket under the stream (for a TLS handshake), or -1.
  virtual int socket_fd() const { return -1; }
  // The TLS peer's certificate subject, "" without one.
  virtual std::string peer_dn() const { return {}; }
  // Whether the peer ended the stream — end of stream, or its kernel reset
  // the connection — which a peer's process dying does. A link that went
  // silent or timed out is not that: the peer may live on (a COLO pair
  // tells the two apart).
  virtual bool peer_ended() const { return peer_ended_; }

  // Zero-copy sending (MSG_ZEROCOPY; plain TCP sockets only): after
  // enable_zero_copy(), write_zero_copy() leaves `iov`'s bytes to the kernel,
  // which reads them while they go out, until flush_zero_copy() returns;
  // that says whether the kernel had to copy any of them after all.
  virtual caf::expected<void> enable_zero_copy();
  virtual caf::expected<void> write_zero_copy(std::span<iovec> iov) { return write_all(iov); }
  virtual caf::expected<bool> flush_zero_copy() { return false; }

protected:
  // A read or write failing with `err` (an errno): notes a reset.
  void note_failure(int err) {
    if (err == ECONNRESET || err == EPIPE)
      peer_ended_ = true;
  }
  std::atomic<bool> interrupted_{false};
  std::atomic<bool> peer_ended_{false};
};

// The errors every stream reports alike.
caf::error stream_interrupted();
caf::error stream_closed_by_peer();

} // namespace ferry
