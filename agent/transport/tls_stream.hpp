#pragma once
// TLS 1.3 as a layer over another byte stream: the handshake runs on the
// inner stream's socket, then bytes travel as sealed records keyed from the
// session (sealed_records.hpp). A write's pieces become a few records of up
// to 256 KiB, sealed straight from where they lie into one output buffer
// and sent in large socket writes; page data (write_placed) goes in bulk
// records that the reader decrypts in place (read_placed: received into
// guest RAM, no copy out of a TLS buffer).

#include "agent/transport/byte_stream.hpp"
#include "agent/transport/migration_tls.hpp"
#include "agent/transport/sealed_records.hpp"

#include <memory>
#include <optional>
#include <vector>

namespace ferry {

class tls_stream final : public byte_stream {
public:
  // The handshake over `inner` (which must sit on a socket); `inner` stays
  // its owner's, so it can still be interrupted meanwhile.
  static caf::expected<tls_session_ptr> handshake(byte_stream& inner, const tls_context& ctx);
  // The session from then on, over `inner`.
  static caf::expected<std::unique_ptr<byte_stream>> over(std::unique_ptr<byte_stream> inner,
                                                          tls_session_ptr session);
  // Records under the given keys (tests and fuzzing drive the record layer
  // this way, over any stream); `session`, if any, names the peer.
  static caf::expected<std::unique_ptr<byte_stream>> with_keys(std::unique_ptr<byte_stream> inner,
                                                               const sealed::direction_keys& seal,
                                                               const sealed::direction_keys& open,
                                                               tls_session_ptr session = {});

  caf::expected<void> write_all(std::span<iovec> iov) override;
  caf::expected<void> write_placed(std::span<iovec> iov, size_t placed_from) override;
  caf::expected<size_t> read_some(uint8_t* p, size_t n) override;
  caf::expected<size_t> read_placed(uint8_t* p, size_t n) override;
  // Bytes already read from the socket count: the socket may be quiet while
  // the next record already waits here.
  bool wait_readable(int timeout_ms) override {
    return plain_left_ > 0 || in_len_ > in_pos_ || inner_->wait_readable(timeout_ms);
  }
  void interrupt() override;
  caf::expected<void> finish() override { return inner_->finish(); }
  int socket_fd() const override { return inner_->socket_fd(); }
  bool peer_ended() const override { return inner_->peer_ended(); }
  std::string peer_dn() const override { return session_ ? session_->peer_dn() : std::string{}; }

private:
  tls_stream(std::unique_ptr<byte_stream> inner, tls_session_ptr session,
             sealed::record_cipher sealer, sealed::record_cipher opener);

  struct piece {
    const uint8_t* at;
    size_t len;
  };
  caf::expected<void> seal_record(sealed::kind k, const std::vector<piece>& pieces, size_t len);
  caf::expected<void> flush_out();
  // At least `k` unread bytes in in_ (0: the peer ended the stream first),
  // reading little beyond them: what follows may be a bulk record, whose
  // bytes belong in the reader's memory, not copied out of in_.
  caf::expected<bool> fill(size_t k);
  // The next record's header; nullopt at a clean end of stream.
  caf::expected<std::optional<sealed::header>> next_header();
  // Reads and opens the whole record whose header was just taken.
  caf::expected<void> open_whole(const sealed::header& h);
  size_t serve(uint8_t* p, size_t n);
  caf::expected<size_t> stream_bulk(uint8_t* p, size_t n);
  caf::error read_error(const caf::error& why) const;

  std::unique_ptr<byte_stream> inner_;
  tls_session_ptr session_;
  sealed::record_cipher sealer_;
  sealed::record_cipher opener_;
  // Both buffers are allocated once and never zeroed: every byte is written
  // before it is read, and clearing ~0.8 MB of fresh memory per channel was
  // a measurable part of a small migration's setup.
  // Sealed records not yet written: the first out_len_ bytes.
  std::unique_ptr<uint8_t[]> out_;
  size_t out_len_ = 0;

  std::unique_ptr<uint8_t[]> in_; // bytes read from the socket (in_capacity)
  size_t in_pos_ = 0;             // first unread byte
  size_t in_len_ = 0;             // end of what was read
  size_t plain_at_ = 0;           // an opened record's bytes not yet handed over,
  size_t plain_left_ = 0;         // in in_
  size_t bulk_left_ = 0;          // bytes of a bulk record still to come
};

} // namespace ferry
