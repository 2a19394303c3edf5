#pragma once
// TLS 1.3 as a layer over another byte stream: the handshake runs on the
// inner stream's socket; records are written buffered and flushed once per
// write_all (a page batch leaves in a few large writes). Each record is as
// full as TLS allows (16 KiB): a write's pieces (a header, a page list,
// 4 KiB pages) are gathered first, so the cipher and the reader handle a
// quarter of the records they would for one record per page.

#include "agent/transport/byte_stream.hpp"
#include "agent/transport/migration_tls.hpp"

#include <memory>
#include <vector>

namespace ferry {

class tls_stream final : public byte_stream {
public:
  // The handshake over `inner` (which must sit on a socket); `inner` stays
  // its owner's, so it can still be interrupted meanwhile.
  static caf::expected<tls_session_ptr> handshake(byte_stream& inner, const tls_context& ctx);
  // The session from then on, over `inner`.
  static std::unique_ptr<byte_stream> over(std::unique_ptr<byte_stream> inner,
                                           tls_session_ptr session);

  caf::expected<void> write_all(std::span<iovec> iov) override;
  caf::expected<size_t> read_some(uint8_t* p, size_t n) override;
  // The socket under the session; records already buffered are not seen
  // (callers watch channels that should be idle).
  // Records read ahead into the session count: the socket may be quiet
  // while the next record already waits in OpenSSL's buffer.
  bool wait_readable(int timeout_ms) override {
    return session_->pending() || inner_->wait_readable(timeout_ms);
  }
  void interrupt() override;
  caf::expected<void> finish() override { return inner_->finish(); }
  int socket_fd() const override { return inner_->socket_fd(); }
  std::string peer_dn() const override { return session_->peer_dn(); }

private:
  tls_stream(std::unique_ptr<byte_stream> inner, tls_session_ptr session)
    : inner_(std::move(inner)), session_(std::move(session)) {}

  caf::expected<void> seal(const uint8_t* p, size_t n);
  caf::expected<void> seal_gathered();

  std::unique_ptr<byte_stream> inner_;
  tls_session_ptr session_;
  std::vector<uint8_t> gather_; // pieces of the next record
};

} // namespace ferry
