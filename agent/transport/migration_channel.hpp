#pragma once
// One byte stream of a migration (any byte_stream: socket, pipe to or from
// an exec: command, file, TLS over a socket, in-memory loopback) carrying
// framed records (protocol/migration_stream). A channel is used by one thread
// at a time; interrupt() may be called from any thread to unblock it (cancel,
// failure of a sibling channel).

#include "agent/transport/byte_stream.hpp"
#include "agent/transport/fd_stream.hpp"
#include "agent/transport/migration_address.hpp"
#include "agent/transport/migration_tls.hpp"
#include "common/unique_fd.hpp"
#include "protocol/migration_stream.hpp"

#include <caf/expected.hpp>

#include <sys/types.h>
#include <sys/uio.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <utility>
#include <vector>

namespace ferry {

class migration_channel {
public:
  explicit migration_channel(std::unique_ptr<byte_stream> stream);
  using kind = fd_stream::kind;
  // A TCP socket is watched for silence (link_watch, the migration link
  // timeout): a silent link fails the channel's reads and writes, even
  // between them, with that reason.
  migration_channel(unique_fd fd, kind k, pid_t child = -1);
  ~migration_channel();
  migration_channel(const migration_channel&) = delete;
  migration_channel& operator=(const migration_channel&) = delete;

  // One record whose payload is the concatenation of `parts`; those from
  // `placed_from` on are page data the reader places in guest RAM
  // (read_payload with placed). The record's CRC covers the payload but
  // the placed data: page data is proven by the switchover digest, so the
  // sender need not copy it out of a running guest to keep it still.
  caf::expected<void> send(mig::record_type type, std::span<const iovec> parts,
                           size_t placed_from = SIZE_MAX);
  caf::expected<void> send(mig::record_type type, std::span<const uint8_t> payload);
  // A live-pages record: `head` (the batch's prefix and entries, under the
  // CRC) is copied out, `pages` (in guest memory, placed data) goes
  // zero-copy once enabled.
  caf::expected<void> send_live(std::span<const iovec> head, std::span<const iovec> pages);
  caf::expected<void> enable_zero_copy() { return stream_->enable_zero_copy(); }
  // Waits until the kernel is done with every page sent zero-copy; true if
  // it copied some after all (dirty-sync-missed-zero-copy).
  caf::expected<bool> flush_zero_copy();
  // A record in pieces, for a reader that places its payload itself: the
  // header, then the payload's bytes in order (h.length in all), then
  // end_payload() checks the CRC over what was read but placed data.
  caf::expected<mig::record_header> receive_header();
  // `placed`: `p` is incoming guest RAM, which may hold page data before a
  // TLS record's tag is checked (byte_stream::read_placed); not under the
  // CRC (see send).
  caf::expected<void> read_payload(uint8_t* p, size_t n, bool placed = false);
  caf::expected<void> end_payload(const mig::record_header& h);
  // The payload of the record whose header was just taken, whole, checked,
  // in `payload`.
  caf::expected<void> receive_payload(const mig::record_header& h, std::vector<uint8_t>& payload);
  // The next record; its checked payload lands in `payload`.
  caf::expected<mig::record_header> receive(std::vector<uint8_t>& payload);

  // Runs TLS over this (socket) channel from now on.
  caf::expected<void> start_tls(const tls_context& ctx);
  // The TLS peer's certificate subject ("" without TLS or certificate).
  std::string peer_dn() const { return stream_->peer_dn(); }

  // True once a read would not block (see byte_stream).
  bool wait_readable(int timeout_ms) { return stream_->wait_readable(timeout_ms); }
  void interrupt();
  // From now on the owner judges the peer's silence itself (a COLO pair's
  // heartbeats): no link watch, no kernel timeout. A silent link is then
  // never cut, so when it comes back the peer does not take the cut for
  // this side's death (an end of stream or a reset).
  void keep_through_silence();
  // The peer ended the channel (its process died: end of stream or a reset),
  // as opposed to a link that went silent, timed out or was interrupted here.
  bool peer_ended() const { return !silent_ && !interrupted_ && stream_->peer_ended(); }
  // Set once interrupted (by its owner or by the link watch): a writer
  // waiting for its turn gives up on it.
  const std::atomic<bool>& interrupted_flag() const { return interrupted_; }
  // The writing side is done: closes the stream and, for an exec: command,
  // waits for it to exit — the migration is complete only once the command
  // has taken everything. A command failing is an error.
  caf::expected<void> finish() { return stream_->finish(); }
  uint64_t bytes_sent() const { return sent_.load(std::memory_order_relaxed); }
  uint64_t bytes_received() const { return received_.load(std::memory_order_relaxed); }

private:
  caf::expected<void> read_exact(uint8_t* p, size_t n, bool placed = false);
  // A record's payload CRC (over the parts before `placed_from`; 0 under
  // TLS) and its length (all parts).
  std::pair<uint32_t, size_t> crc_and_length(std::span<const iovec> parts,
                                             size_t placed_from) const;
  // Why an interrupted read or write failed.
  caf::error cut_error() const;

  std::unique_ptr<byte_stream> stream_;
  std::mutex swap_mtx_; // interrupt() against start_tls() replacing stream_
  std::atomic<bool> interrupted_{false};
  std::atomic<bool> silent_{false}; // the link watch cut it
  // Under TLS each record's payload is already authenticated by the cipher
  // (AEAD): its CRC is neither computed nor checked (it was a quarter of a
  // TLS channel's CPU). Both ends of a channel agree: TLS is all or nothing.
  bool sealed_ = false;
  uint32_t payload_crc_ = 0;     // of the payload read so far
  bool payload_checked_ = false; // this record's payload has a CRC to check
  uint64_t watch_ = 0;
  std::atomic<uint64_t> sent_{0};
  std::atomic<uint64_t> received_{0};
};

// Where a source's channels come from and a destination's are accepted: the
// seam that lets tests run the engines over loopback streams.
using channel_opener = std::function<caf::expected<std::unique_ptr<migration_channel>>()>;

class channel_acceptor {
public:
  virtual ~channel_acceptor() = default;
  // The next channel; fails after `timeout_ms` (< 0: no limit) or when
  // interrupted.
  virtual caf::expected<std::unique_ptr<migration_channel>> accept(int timeout_ms) = 0;
  virtual void interrupt() = 0;
  // Every channel is in: give the address back (a finished guest must not
  // hold its port). Called by the accepting thread only.
  virtual void stop_listening() {}
};

// The source's side: connects (tcp, unix), starts the command with its stdin
// on a pipe (exec) or opens the file for writing at its offset (file).
caf::expected<std::unique_ptr<migration_channel>> open_outgoing(const migration_address& a);

// The destination's side.
class migration_listener final : public channel_acceptor {
public:
  static caf::expected<std::unique_ptr<migration_listener>> create(const migration_address& a);
  // The next channel; fails after `timeout_ms` or when interrupted. exec:
  // and file: yield their one stream once.
  caf::expected<std::unique_ptr<migration_channel>> accept(int timeout_ms) override;
  void interrupt() override { interrupted_ = true; }
  void stop_listening() override;
  // The address with the port actually bound.
  const migration_address& address() const { return addr_; }

private:
  migration_address addr_;
  unique_fd fd_;
  bool used_ = false;
  std::atomic<bool> interrupted_{false};
};

} // namespace ferry
