#include "agent/transport/migration_tls.hpp"

#include "common/error.hpp"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <arpa/inet.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <vector>

namespace ferry {

namespace {

// The newest OpenSSL error, as text ("sslv3 alert certificate expired").
std::string ssl_error_text() {
  const unsigned long e = ERR_get_error();
  ERR_clear_error();
  if (e == 0)
    return "connection closed during the TLS exchange";
  const char* reason = ERR_reason_error_string(e);
  return reason != nullptr ? reason : "TLS error " + std::to_string(e);
}

caf::error tls_error(std::string what) {
  return make_ferry_error(errc::system_error, std::move(what));
}

bool is_ip(const std::string& host) {
  in6_addr a6{};
  in_addr a4{};
  return ::inet_pton(AF_INET, host.c_str(), &a4) == 1 ||
         ::inet_pton(AF_INET6, host.c_str(), &a6) == 1;
}

bool readable(const std::string& path) {
  return ::access(path.c_str(), R_OK) == 0;
}

// A peer that connects and then says nothing (or too little) must not hold
// a channel: each read of a handshake waits this long at most.
constexpr timeval handshake_wait{10, 0};
constexpr timeval no_wait{0, 0};

void receive_timeout(int fd, const timeval& t) {
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &t, sizeof t);
}

// With TLS 1.3 a client believes the handshake done before the server has
// judged its certificate. The server's one-byte TLS record says it has; a
// refusal reaches the client as the alert in its place, with its reason.
caf::expected<void> confirm(SSL* ssl, bool server, int fd) {
  uint8_t byte = 1;
  size_t n = 0;
  if (server) {
    if (SSL_write_ex(ssl, &byte, 1, &n) != 1)
      return tls_error("TLS handshake with the source failed: " + ssl_error_text());
    return {};
  }
  receive_timeout(fd, handshake_wait);
  const int rc = SSL_read_ex(ssl, &byte, 1, &n);
  receive_timeout(fd, no_wait);
  if (rc != 1 || byte != 1)
    return tls_error("TLS handshake with the destination failed: " + ssl_error_text());
  return {};
}

} // namespace

struct tls_context::impl {
  SSL_CTX* ctx = nullptr;
  bool server = false;
  std::string hostname;
  ~impl() { SSL_CTX_free(ctx); }
};

struct tls_session::impl {
  SSL* ssl = nullptr;
  bool server = false;
  ~impl() { SSL_free(ssl); }
};

void tls_session_deleter::operator()(tls_session* s) const {
  delete s;
}

tls_context::tls_context(std::unique_ptr<impl> p) : impl_(std::move(p)) {}
tls_context::~tls_context() = default;
tls_session::tls_session(std::unique_ptr<impl> p) : impl_(std::move(p)) {}
tls_session::~tls_session() = default;

caf::expected<std::shared_ptr<tls_context>> tls_context::create(const tls_creds_object& creds,
                                                                std::string hostname) {
  auto p = std::make_unique<impl>();
  p->server = creds.server;
  p->hostname = std::move(hostname);
  p->ctx = SSL_CTX_new(creds.server ? TLS_server_method() : TLS_client_method());
  if (p->ctx == nullptr)
    return tls_error("TLS: " + ssl_error_text());
  // TLS 1.3 only: no renegotiation exists there, and nothing older is needed
  // between two Ferry agents.
  SSL_CTX_set_min_proto_version(p->ctx, TLS1_3_VERSION);
  SSL_CTX_set_options(p->ctx, SSL_OP_NO_RENEGOTIATION);
  // Nothing may follow the handshake but the confirmation (no resumption
  // tickets): the channel's bytes are sealed records from then on.
  SSL_CTX_set_num_tickets(p->ctx, 0);
  // AES-128-GCM first: about 1.6x the throughput of AES-256-GCM with AES-NI
  // (openssl speed here: 4.2 vs 2.7 GB/s), and both ends of a migration pay
  // it for every page. The 256-bit suite stays acceptable for peers that insist.
  if (SSL_CTX_set_ciphersuites(p->ctx, "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:"
                                       "TLS_CHACHA20_POLY1305_SHA256") != 1)
    return tls_error("TLS: " + ssl_error_text());
  const std::string ca = creds.dir + "/ca-cert.pem";
  if (SSL_CTX_load_verify_locations(p->ctx, ca.c_str(), nullptr) != 1)
    return tls_error("Unable to load TLS CA certificate '" + ca + "': " + ssl_error_text());
  const std::string role = creds.server ? "server" : "client";
  const std::string cert = creds.dir + "/" + role + "-cert.pem";
  const std::string key = creds.dir + "/" + role + "-key.pem";
  // A client certificate is optional (the server may not ask for one).
  if (creds.server || readable(cert)) {
    if (SSL_CTX_use_certificate_chain_file(p->ctx, cert.c_str()) != 1)
      return tls_error("Unable to load TLS certificate '" + cert + "': " + ssl_error_text());
    if (SSL_CTX_use_PrivateKey_file(p->ctx, key.c_str(), SSL_FILETYPE_PEM) != 1)
      return tls_error("Unable to load TLS key '" + key + "': " + ssl_error_text());
    if (SSL_CTX_check_private_key(p->ctx) != 1)
      return tls_error("TLS key '" + key + "' does not match '" + cert + "'");
  }
  if (creds.server)
    SSL_CTX_set_verify(p->ctx,
                       creds.verify_peer ? SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT
                                         : SSL_VERIFY_NONE,
                       nullptr);
  else
    SSL_CTX_set_verify(p->ctx, creds.verify_peer ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, nullptr);
  return std::shared_ptr<tls_context>{new tls_context(std::move(p))};
}

std::shared_ptr<tls_context> tls_context::for_host(std::string hostname) const {
  auto p = std::make_unique<impl>();
  SSL_CTX_up_ref(impl_->ctx);
  p->ctx = impl_->ctx;
  p->server = impl_->server;
  p->hostname = std::move(hostname);
  return std::shared_ptr<tls_context>{new tls_context(std::move(p))};
}

caf::expected<tls_session_ptr> tls_context::handshake(int fd) const {
  auto s = std::make_unique<tls_session::impl>();
  s->ssl = SSL_new(impl_->ctx);
  if (s->ssl == nullptr)
    return tls_error("TLS: " + ssl_error_text());
  // Plain socket I/O without read-ahead: OpenSSL must not swallow bytes of
  // the records that follow the handshake (sealed_records).
  if (SSL_set_fd(s->ssl, fd) != 1)
    return tls_error("TLS: " + ssl_error_text());
  s->server = impl_->server;
  const auto& host = impl_->hostname;
  if (!impl_->server && !host.empty()) {
    if (is_ip(host)) {
      X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(s->ssl), host.c_str());
    } else {
      SSL_set1_host(s->ssl, host.c_str());
    }
  }
  // A silent client must not hold the port (handshake_wait).
  if (impl_->server)
    receive_timeout(fd, handshake_wait);
  const int rc = impl_->server ? SSL_accept(s->ssl) : SSL_connect(s->ssl);
  if (rc == 1 && impl_->server)
    receive_timeout(fd, no_wait);
  if (rc != 1 && impl_->server) {
    // With TLS 1.3 the client believes the handshake done before we judged
    // its certificate, and has written already: closing now, with its bytes
    // unread, would reset the connection and lose our alert on the way.
    // Close our side and drain briefly so the client reads why.
    receive_timeout(fd, timeval{0, 200'000});
    ::shutdown(fd, SHUT_WR);
    char sink[4096];
    while (::read(fd, sink, sizeof sink) > 0) {
    }
  }
  if (rc != 1) {
    const long verify = SSL_get_verify_result(s->ssl);
    const std::string peer = impl_->server ? "source" : "destination";
    if (verify == X509_V_ERR_HOSTNAME_MISMATCH || verify == X509_V_ERR_IP_ADDRESS_MISMATCH)
      return tls_error("TLS handshake with the " + peer +
                       " failed: Certificate does not match the hostname " + host);
    if (verify != X509_V_OK)
      return tls_error("TLS handshake with the " + peer +
                       " failed: its certificate: " + X509_verify_cert_error_string(verify));
    return tls_error("TLS handshake with the " + peer + " failed: " + ssl_error_text());
  }
  if (auto ok = confirm(s->ssl, impl_->server, fd); !ok)
    return ok.error();
  return tls_session_ptr{new tls_session(std::move(s))};
}

caf::expected<sealed::direction_keys> tls_session::keys(bool sending) const {
  // One export per channel: the client's writing keys first, then the
  // server's; each side seals with its own and opens with the other's.
  constexpr const char label[] = "EXPORTER-ferry-migration-records";
  const SSL_CIPHER* c = SSL_get_current_cipher(impl_->ssl);
  const int nid = c != nullptr ? SSL_CIPHER_get_cipher_nid(c) : NID_undef;
  const int records = sealed::record_cipher_for(nid);
  const EVP_CIPHER* cipher = EVP_get_cipherbynid(records);
  if (cipher == nullptr)
    return tls_error("TLS: the negotiated cipher has no record keys");
  const auto key_len = static_cast<size_t>(EVP_CIPHER_get_key_length(cipher));
  const size_t half = key_len + sealed::iv_size;
  std::vector<uint8_t> material(2 * half);
  if (SSL_export_keying_material(impl_->ssl, material.data(), material.size(), label,
                                 sizeof label - 1, nullptr, 0, 0) != 1)
    return tls_error("TLS: exporting record keys: " + ssl_error_text());
  const bool client_writes = sending != impl_->server;
  const uint8_t* at = material.data() + (client_writes ? 0 : half);
  sealed::direction_keys k;
  k.cipher_nid = records;
  k.key.assign(at, at + key_len);
  std::copy(at + key_len, at + half, k.iv.begin());
  OPENSSL_cleanse(material.data(), material.size());
  return k;
}

std::string tls_session::peer_dn() const {
  X509* cert = SSL_get1_peer_certificate(impl_->ssl);
  if (cert == nullptr)
    return {};
  BIO* bio = BIO_new(BIO_s_mem());
  X509_NAME_print_ex(bio, X509_get_subject_name(cert), 0, XN_FLAG_RFC2253);
  char* data = nullptr;
  const long len = BIO_get_mem_data(bio, &data);
  std::string dn(data, static_cast<size_t>(len));
  BIO_free(bio);
  X509_free(cert);
  return dn;
}

} // namespace ferry
