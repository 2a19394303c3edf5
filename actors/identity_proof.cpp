#include "actors/identity_proof.hpp"

#include "common/error.hpp"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>

#include <fstream>
#include <memory>
#include <sstream>

namespace ferry::identity {

namespace {

// The signed text names its purpose, so a signature made here cannot be
// replayed as anything else the key signs.
constexpr std::string_view purpose = "ferry control-plane identity proof v1\n";

template <class T, void (*Free)(T*)>
struct freer {
  void operator()(T* p) const { Free(p); }
};
using bio_ptr = std::unique_ptr<BIO, freer<BIO, BIO_free_all>>;
using x509_ptr = std::unique_ptr<X509, freer<X509, X509_free>>;
using pkey_ptr = std::unique_ptr<EVP_PKEY, freer<EVP_PKEY, EVP_PKEY_free>>;
using md_ctx_ptr = std::unique_ptr<EVP_MD_CTX, freer<EVP_MD_CTX, EVP_MD_CTX_free>>;
using store_ptr = std::unique_ptr<X509_STORE, freer<X509_STORE, X509_STORE_free>>;
using store_ctx_ptr = std::unique_ptr<X509_STORE_CTX, freer<X509_STORE_CTX, X509_STORE_CTX_free>>;

caf::error failed(const std::string& why) {
  ERR_clear_error();
  return make_ferry_error(errc::invalid_argument, "identity proof: " + why);
}

std::string hex(const unsigned char* p, size_t n) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  out.reserve(n * 2);
  for (size_t i = 0; i < n; ++i) {
    out += digits[p[i] >> 4];
    out += digits[p[i] & 15];
  }
  return out;
}

bool unhex(const std::string& s, std::string& out) {
  if (s.size() % 2 != 0)
    return false;
  auto nibble = [](char c) {
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
  };
  for (size_t i = 0; i < s.size(); i += 2) {
    const int hi = nibble(s[i]);
    const int lo = nibble(s[i + 1]);
    if (hi < 0 || lo < 0)
      return false;
    out += static_cast<char>(hi * 16 + lo);
  }
  return true;
}

std::string signed_text(const std::string& challenge) {
  return std::string{purpose} + challenge;
}

x509_ptr parse_cert(const std::string& pem) {
  bio_ptr b{BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()))};
  return x509_ptr{b ? PEM_read_bio_X509(b.get(), nullptr, nullptr, nullptr) : nullptr};
}

std::string subject_field(X509* cert, int nid) {
  const X509_NAME* name = X509_get_subject_name(cert);
  const int at = X509_NAME_get_index_by_NID(name, nid, -1);
  if (at < 0)
    return {};
  const ASN1_STRING* data = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, at));
  return std::string(reinterpret_cast<const char*>(ASN1_STRING_get0_data(data)),
                     static_cast<size_t>(ASN1_STRING_length(data)));
}

// A file's whole text ("" when unreadable: nothing parses from it).
std::string file_text(const std::string& path) {
  std::ifstream in{path};
  std::stringstream ss;
  ss << in.rdbuf();
  return in ? ss.str() : std::string{};
}

pkey_ptr load_key(const std::string& path) {
  bio_ptr kb{BIO_new_file(path.c_str(), "r")};
  return pkey_ptr{kb ? PEM_read_bio_PrivateKey(kb.get(), nullptr, nullptr, nullptr) : nullptr};
}

} // namespace

std::string new_challenge() {
  unsigned char b[32];
  if (RAND_bytes(b, sizeof b) != 1)
    return {}; // an empty challenge fails every check
  return hex(b, sizeof b);
}

caf::expected<proof> prove(const tls_identity& id, const std::string& challenge) {
  if (challenge.size() != 64)
    return failed("a challenge is 32 bytes in hex");
  const std::string cert = file_text(id.cert_file);
  if (cert.empty())
    return failed("cannot read certificate '" + id.cert_file + "'");
  const auto key = load_key(id.key_file);
  if (!key)
    return failed("cannot read private key '" + id.key_file + "'");
  md_ctx_ptr ctx{EVP_MD_CTX_new()};
  const std::string text = signed_text(challenge);
  size_t len = 0;
  if (!ctx || EVP_DigestSignInit(ctx.get(), nullptr, EVP_sha256(), nullptr, key.get()) != 1 ||
      EVP_DigestSign(ctx.get(), nullptr, &len, reinterpret_cast<const unsigned char*>(text.data()),
                     text.size()) != 1)
    return failed("cannot sign with '" + id.key_file + "'");
  std::string sig(len, '\0');
  if (EVP_DigestSign(ctx.get(), reinterpret_cast<unsigned char*>(sig.data()), &len,
                     reinterpret_cast<const unsigned char*>(text.data()), text.size()) != 1)
    return failed("cannot sign with '" + id.key_file + "'");
  return proof{cert, hex(reinterpret_cast<const unsigned char*>(sig.data()), len)};
}

std::string subject_dn(const std::string& role, const std::string& name) {
  return "CN=" + name + ",OU=" + role + ",O=Ferry";
}

caf::expected<peer> subject_of(const std::string& cert_pem) {
  auto cert = parse_cert(cert_pem);
  if (!cert)
    return failed("not a PEM certificate");
  peer p{subject_field(cert.get(), NID_organizationalUnitName),
         subject_field(cert.get(), NID_commonName)};
  if (p.role.empty() || p.name.empty())
    return failed("the certificate's subject carries no role (OU) and name (CN)");
  return p;
}

caf::expected<std::string> own_identity(const tls_identity& id, const std::string& role) {
  auto fail_start = [](const std::string& why) {
    ERR_clear_error();
    return make_ferry_error(errc::invalid_argument, why);
  };
  store_ptr store{X509_STORE_new()};
  if (!store || X509_STORE_load_file(store.get(), id.ca_file.c_str()) != 1)
    return fail_start("tls.ca '" + id.ca_file + "' is not a readable PEM CA file");
  const std::string pem = file_text(id.cert_file);
  auto cert = parse_cert(pem);
  if (!cert)
    return fail_start("tls.cert '" + id.cert_file + "' is not a readable PEM certificate");
  const auto key = load_key(id.key_file);
  if (!key)
    return fail_start("tls.key '" + id.key_file + "' is not a readable PEM private key");
  if (X509_check_private_key(cert.get(), key.get()) != 1)
    return fail_start("tls.key '" + id.key_file + "' is not the key of tls.cert '" + id.cert_file +
                      "'");
  auto who = subject_of(pem);
  if (!who || who->role != role)
    return fail_start("tls.cert '" + id.cert_file + "' is not a " + role +
                      " certificate (its subject needs OU=" + role +
                      "; deploy/pki/ferry-pki.sh cluster issues them)");
  return who->name;
}

caf::expected<peer> check(const std::string& ca_file, const proof& p,
                          const std::string& challenge) {
  if (challenge.size() != 64)
    return failed("no challenge was made");
  auto cert = parse_cert(p.cert_pem);
  if (!cert)
    return failed("the peer sent no PEM certificate");
  store_ptr store{X509_STORE_new()};
  if (!store || X509_STORE_load_file(store.get(), ca_file.c_str()) != 1)
    return failed("cannot load the CA file '" + ca_file + "'");
  store_ctx_ptr vctx{X509_STORE_CTX_new()};
  if (!vctx || X509_STORE_CTX_init(vctx.get(), store.get(), cert.get(), nullptr) != 1)
    return failed("out of memory");
  if (X509_verify_cert(vctx.get()) != 1)
    return failed("the peer's certificate does not chain to '" + ca_file +
                  "': " + X509_verify_cert_error_string(X509_STORE_CTX_get_error(vctx.get())));
  std::string sig;
  if (!unhex(p.signature, sig))
    return failed("the signature is not hex");
  md_ctx_ptr ctx{EVP_MD_CTX_new()};
  const std::string text = signed_text(challenge);
  if (!ctx ||
      EVP_DigestVerifyInit(ctx.get(), nullptr, EVP_sha256(), nullptr,
                           X509_get0_pubkey(cert.get())) != 1 ||
      EVP_DigestVerify(ctx.get(), reinterpret_cast<const unsigned char*>(sig.data()), sig.size(),
                       reinterpret_cast<const unsigned char*>(text.data()), text.size()) != 1)
    return failed("the signature was not made with the certificate's key");
  return subject_of(p.cert_pem);
}

} // namespace ferry::identity
