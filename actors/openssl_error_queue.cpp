// Works around a CAF 0.17 bug that otherwise takes down every control-plane
// link when one peer dies.
//
// OpenSSL keeps one error queue per thread, and SSL_get_error() is only
// reliable when that queue was empty before the SSL_read/SSL_write/
// SSL_connect/SSL_accept it diagnoses (SSL_get_error(3)). CAF's openssl
// session (libcaf_openssl, caf::openssl::session::handle_ssl_result) never
// empties it. When a peer vanishes, its failed read leaves an error in the
// queue of the multiplexer thread that serves *all* connections; the next
// read on any healthy connection that would merely block is then reported as
// a fatal error and CAF closes that connection too (seen: killing one agent
// disconnected the orchestrator from every agent).
//
// This file must be linked into the executable itself (not a library): its
// definitions then interpose the libssl symbols libcaf_openssl.so calls,
// empty the queue and call the real functions. Ferry's own TLS code
// (agent/migration_tls) uses the *_ex variants and is not affected.

#include <dlfcn.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

namespace {

template <class F>
F real(const char* name) {
  // RTLD_NEXT: the definition this one hides (libssl's).
  return reinterpret_cast<F>(::dlsym(RTLD_NEXT, name));
}

} // namespace

extern "C" {

int SSL_read(SSL* ssl, void* buf, int num) {
  static const auto next = real<int (*)(SSL*, void*, int)>("SSL_read");
  ERR_clear_error();
  return next(ssl, buf, num);
}

int SSL_write(SSL* ssl, const void* buf, int num) {
  static const auto next = real<int (*)(SSL*, const void*, int)>("SSL_write");
  ERR_clear_error();
  return next(ssl, buf, num);
}

int SSL_connect(SSL* ssl) {
  static const auto next = real<int (*)(SSL*)>("SSL_connect");
  ERR_clear_error();
  return next(ssl);
}

int SSL_accept(SSL* ssl) {
  static const auto next = real<int (*)(SSL*)>("SSL_accept");
  ERR_clear_error();
  return next(ssl);
}

} // extern "C"
