#pragma once
// The records a TLS migration channel carries once its handshake is done.
// TLS authenticates the peers and agrees on the cipher; each direction then
// gets its own key and IV from the session's exporter (RFC 8446 7.5), and
// bytes travel as Ferry's own AEAD records: a header (kind, length), the
// ciphertext, a 16-byte tag. The header is the record's associated data and
// a per-direction sequence number is its nonce, so a record altered,
// dropped, replayed or moved fails. Why not TLS records: OpenSSL decrypts
// into its own buffer and copies out, where these records let page data be
// read from the socket into guest RAM and decrypted there (the kernel's TLS,
// which would do the same, is not offered on every host).
//
// Two kinds: a control record is opened whole before any of its bytes are
// used; a bulk record carries only page data the reader places in memory it
// does not trust until the migration completes (an incoming guest's RAM),
// so it is decrypted as it arrives and its tag checked at its end.

#include <caf/expected.hpp>

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

struct evp_cipher_ctx_st;

namespace ferry::sealed {

inline constexpr size_t header_size = 8;
inline constexpr size_t tag_size = 16;
inline constexpr size_t iv_size = 12;
// The largest record either side writes or accepts.
inline constexpr size_t max_record = size_t{256} * 1024;

enum class kind : uint8_t { control = 1, bulk = 2 };

struct header {
  kind type = kind::control;
  uint32_t length = 0; // plaintext bytes, 1..max_record
};

std::array<uint8_t, header_size> encode_header(const header& h);
// A header from the wire: an unknown kind, a length of 0 or above
// max_record, or reserved bytes set are refused.
caf::expected<header> decode_header(std::span<const uint8_t, header_size> raw);

// The records' AEAD for the cipher the handshake negotiated: AES-OCB
// (RFC 7253) of the same key size for AES-GCM — twice GCM's throughput with
// AES-NI and OpenSSL 3.0, the cipher being most of a TLS channel's CPU —
// and ChaCha20-Poly1305 as it is (hosts without AES instructions).
int record_cipher_for(int negotiated_nid);

// One direction's cipher (an OpenSSL NID, record_cipher_for's choice), key
// and IV.
struct direction_keys {
  int cipher_nid = 0;
  std::vector<uint8_t> key;
  std::array<uint8_t, iv_size> iv{};
};

struct cipher_ctx_deleter {
  void operator()(evp_cipher_ctx_st* c) const;
};

// One direction's records in order: seal (writer) or open (reader). The
// nonce of record n is the IV with n folded into its last 8 bytes.
class record_cipher {
public:
  static caf::expected<record_cipher> create(const direction_keys& keys, bool seal);

  // Starts the next record (its header is the associated data).
  caf::expected<void> begin(std::span<const uint8_t, header_size> raw_header);
  // Seals or opens `n` bytes of it from `in` to `out` (which may be `in`).
  // With OCB the last partial block's output is written by the next call,
  // whose `out` must then follow this one's (a gap is an error), or by
  // finish: a record's output is whole only once it is finished.
  caf::expected<void> update(const uint8_t* in, size_t n, uint8_t* out);
  // Sealing: writes the tag. Opening: checks it (an error if it fails).
  caf::expected<void> finish(uint8_t* tag);

private:
  record_cipher() = default;
  std::unique_ptr<evp_cipher_ctx_st, cipher_ctx_deleter> ctx_;
  std::array<uint8_t, iv_size> iv_{};
  uint64_t sequence_ = 0;
  bool seal_ = true;
  size_t lag_ = 0;            // bytes taken whose output is not written yet
  uint8_t* lag_at_ = nullptr; // where that output goes
};

} // namespace ferry::sealed
