#include "agent/transport/sealed_records.hpp"

#include "common/error.hpp"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/obj_mac.h>

#include <string>

namespace ferry::sealed {

namespace {

caf::error cipher_error(const std::string& what) {
  const unsigned long e = ERR_get_error();
  ERR_clear_error();
  const char* reason = e != 0 ? ERR_reason_error_string(e) : nullptr;
  return make_ferry_error(errc::system_error,
                          "TLS record " + what +
                            (reason != nullptr ? ": " + std::string{reason} : ""));
}

} // namespace

std::array<uint8_t, header_size> encode_header(const header& h) {
  std::array<uint8_t, header_size> raw{};
  raw[0] = static_cast<uint8_t>(h.type);
  for (size_t i = 0; i < 4; ++i)
    raw[4 + i] = static_cast<uint8_t>(h.length >> (8 * i));
  return raw;
}

caf::expected<header> decode_header(std::span<const uint8_t, header_size> raw) {
  header h;
  if (raw[0] != static_cast<uint8_t>(kind::control) && raw[0] != static_cast<uint8_t>(kind::bulk))
    return make_ferry_error(errc::invalid_argument,
                            "TLS record of unknown kind " + std::to_string(raw[0]));
  if (raw[1] != 0 || raw[2] != 0 || raw[3] != 0)
    return make_ferry_error(errc::invalid_argument, "TLS record header has reserved bytes set");
  h.type = static_cast<kind>(raw[0]);
  for (size_t i = 0; i < 4; ++i)
    h.length |= uint32_t{raw[4 + i]} << (8 * i);
  if (h.length == 0 || h.length > max_record)
    return make_ferry_error(errc::invalid_argument, "TLS record of " + std::to_string(h.length) +
                                                      " bytes (1 to " + std::to_string(max_record) +
                                                      " allowed)");
  return h;
}

void cipher_ctx_deleter::operator()(evp_cipher_ctx_st* c) const {
  EVP_CIPHER_CTX_free(c);
}

caf::expected<record_cipher> record_cipher::create(const direction_keys& keys, bool seal) {
  const EVP_CIPHER* cipher = EVP_get_cipherbynid(keys.cipher_nid);
  if (cipher == nullptr)
    return make_ferry_error(errc::invalid_argument, "TLS records: cipher " +
                                                      std::to_string(keys.cipher_nid) +
                                                      " is not available");
  if (static_cast<size_t>(EVP_CIPHER_get_key_length(cipher)) != keys.key.size() ||
      EVP_CIPHER_get_iv_length(cipher) != static_cast<int>(iv_size))
    return make_ferry_error(errc::invalid_argument, "TLS records: key or IV of the wrong size");
  record_cipher rc;
  rc.ctx_.reset(EVP_CIPHER_CTX_new());
  rc.iv_ = keys.iv;
  rc.seal_ = seal;
  if (!rc.ctx_ || EVP_CipherInit_ex(rc.ctx_.get(), cipher, nullptr, keys.key.data(), nullptr,
                                    seal ? 1 : 0) != 1)
    return cipher_error("cipher setup failed");
  return rc;
}

caf::expected<void> record_cipher::begin(std::span<const uint8_t, header_size> raw_header) {
  // Sequence numbers never repeat: 2^64 records outlast any migration.
  std::array<uint8_t, iv_size> nonce = iv_;
  for (size_t i = 0; i < 8; ++i)
    nonce[iv_size - 1 - i] ^= static_cast<uint8_t>(sequence_ >> (8 * i));
  ++sequence_;
  lag_ = 0;
  lag_at_ = nullptr;
  int out = 0;
  if (EVP_CipherInit_ex(ctx_.get(), nullptr, nullptr, nullptr, nonce.data(), -1) != 1 ||
      EVP_CipherUpdate(ctx_.get(), nullptr, &out, raw_header.data(),
                       static_cast<int>(raw_header.size())) != 1)
    return cipher_error("start failed");
  return {};
}

caf::expected<void> record_cipher::update(const uint8_t* in, size_t n, uint8_t* out) {
  if (n == 0)
    return {};
  // A block cipher mode (OCB) holds back a partial block and writes it with
  // the next bytes: those go where the held-back ones belong, which must be
  // right before `out`.
  uint8_t* write_at = out;
  if (lag_ > 0) {
    if (out != lag_at_ + lag_)
      return make_ferry_error(errc::invalid_argument,
                              "TLS record: data split off a cipher block boundary");
    write_at = lag_at_;
  }
  // Records are at most max_record bytes, well within int.
  int done = 0;
  if (EVP_CipherUpdate(ctx_.get(), write_at, &done, in, static_cast<int>(n)) != 1)
    return cipher_error(seal_ ? "sealing failed" : "opening failed");
  lag_ = lag_ + n - static_cast<size_t>(done);
  lag_at_ = write_at + done;
  return {};
}

caf::expected<void> record_cipher::finish(uint8_t* tag) {
  // Whatever was held back is written where it belongs.
  uint8_t none[EVP_MAX_BLOCK_LENGTH];
  uint8_t* rest = lag_ > 0 ? lag_at_ : none;
  int out = 0;
  if (seal_) {
    if (EVP_CipherFinal_ex(ctx_.get(), rest, &out) != 1 || static_cast<size_t>(out) != lag_ ||
        EVP_CIPHER_CTX_ctrl(ctx_.get(), EVP_CTRL_AEAD_GET_TAG, static_cast<int>(tag_size), tag) !=
          1)
      return cipher_error("sealing failed");
    return {};
  }
  if (EVP_CIPHER_CTX_ctrl(ctx_.get(), EVP_CTRL_AEAD_SET_TAG, static_cast<int>(tag_size), tag) !=
        1 ||
      EVP_CipherFinal_ex(ctx_.get(), rest, &out) != 1 || static_cast<size_t>(out) != lag_) {
    ERR_clear_error();
    return make_ferry_error(errc::system_error,
                            "TLS record failed authentication (altered, reordered or forged)");
  }
  return {};
}

int record_cipher_for(int negotiated) {
  switch (negotiated) {
    case NID_aes_128_gcm:
      return NID_aes_128_ocb;
    case NID_aes_256_gcm:
      return NID_aes_256_ocb;
    default:
      return negotiated;
  }
}

} // namespace ferry::sealed
