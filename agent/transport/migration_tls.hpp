#pragma once
// TLS for migration channels (OpenSSL 3, TLS 1.3 only): credentials from a
// QEMU-style tls-creds-x509 directory (ca-cert.pem, server-cert.pem,
// server-key.pem, client-cert.pem, client-key.pem), the server certificate
// checked against the hostname (SAN, or CN) on the client side, client
// certificates required when verify-peer is on. Authorization of the peer's
// distinguished name (tls-authz) is the destination's business, after the
// handshake, through peer_dn().

#include <caf/expected.hpp>

#include <cstddef>
#include <memory>
#include <string>

namespace ferry {

// -object tls-creds-x509,id=,dir=,endpoint=,verify-peer=
struct tls_creds_object {
  std::string id;
  std::string dir;
  bool server = false; // endpoint=server
  bool verify_peer = true;
};

// -object authz-simple,id=,identity=
struct authz_object {
  std::string id;
  std::string identity;
};

class tls_session;
struct tls_session_deleter {
  void operator()(tls_session* s) const;
};
using tls_session_ptr = std::unique_ptr<tls_session, tls_session_deleter>;

class tls_context {
public:
  // Loads the credentials (errors name the file). `hostname`: client side,
  // what the server certificate must be issued to (a DNS name or an IP).
  static caf::expected<std::shared_ptr<tls_context>> create(const tls_creds_object& creds,
                                                            std::string hostname);
  ~tls_context();
  tls_context(const tls_context&) = delete;
  tls_context& operator=(const tls_context&) = delete;

  // The handshake on a connected, blocking socket.
  caf::expected<tls_session_ptr> handshake(int fd) const;

  struct impl;

private:
  explicit tls_context(std::unique_ptr<impl> p);
  std::unique_ptr<impl> impl_;
};

class tls_session {
public:
  // Bytes moved (> 0), 0 at a clean end of stream, or an error. Written
  // records are buffered until flush(): a page batch goes out in a few
  // large socket writes instead of one per 16 KiB record.
  caf::expected<size_t> write(const void* p, size_t n);
  caf::expected<void> flush();
  caf::expected<size_t> read(void* p, size_t n);
  // Bytes (or a record) already read from the socket and not yet returned.
  bool pending() const;
  // The peer certificate's subject in RFC 4514 form ("CN=...,O=..."), or ""
  // when the peer sent none.
  std::string peer_dn() const;

  struct impl;
  explicit tls_session(std::unique_ptr<impl> p);
  ~tls_session();

private:
  std::unique_ptr<impl> impl_;
};

} // namespace ferry
