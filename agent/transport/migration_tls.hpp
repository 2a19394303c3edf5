#pragma once
// TLS for migration channels (OpenSSL 3, TLS 1.3 only): credentials from a
// QEMU-style tls-creds-x509 directory (ca-cert.pem, server-cert.pem,
// server-key.pem, client-cert.pem, client-key.pem), the server certificate
// checked against the hostname (SAN, or CN) on the client side, client
// certificates required when verify-peer is on. Authorization of the peer's
// distinguished name (tls-authz) is the destination's business, after the
// handshake, through peer_dn(). After the handshake the channel's bytes are
// not TLS records but sealed_records keyed from the session.

#include "agent/transport/sealed_records.hpp"

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
  // The same loaded credentials for another hostname: no file is read again
  // (loading is the costly part: OpenSSL's first context in a process takes
  // milliseconds, and a migration waits for it).
  std::shared_ptr<tls_context> for_host(std::string hostname) const;
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

// A finished handshake: who the peer is, and the keys the channel's
// records use from then on (sealed_records).
class tls_session {
public:
  // This side's keys for sealing what it sends (true) or opening what it
  // receives (false), exported from the session for the negotiated cipher.
  caf::expected<sealed::direction_keys> keys(bool sending) const;
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
