#include "agent/transport/tls_stream.hpp"

#include "common/error.hpp"

#include <algorithm>
#include <array>
#include <cstring>
#include <optional>

namespace ferry {

namespace {

constexpr size_t record_overhead = sealed::header_size + sealed::tag_size;
// Sealed records go out once this much is waiting (and at each write's end).
constexpr size_t out_flush_at = sealed::max_record;
// Room for the largest record plus a read ahead of the next one's start.
constexpr size_t in_capacity = sealed::max_record + record_overhead + size_t{64} * 1024;
// How far a read may go past what is needed: enough for a record header and
// a batch's page list in one read, little of the page data after them.
constexpr size_t read_ahead = 4096;

caf::error write_failed(const caf::error& why) {
  return make_ferry_error(errc::system_error,
                          "Unable to write to migration channel: " + describe(why));
}

caf::error malformed(const std::string& what) {
  return make_ferry_error(errc::invalid_argument, "Unable to read from migration channel: " + what);
}

} // namespace

caf::expected<tls_session_ptr> tls_stream::handshake(byte_stream& inner, const tls_context& ctx) {
  const int fd = inner.socket_fd();
  if (fd < 0)
    return make_ferry_error(errc::invalid_argument, "TLS needs a socket channel");
  return ctx.handshake(fd);
}

caf::expected<std::unique_ptr<byte_stream>> tls_stream::over(std::unique_ptr<byte_stream> inner,
                                                             tls_session_ptr session) {
  FERRY_TRY(seal_keys, session->keys(true));
  FERRY_TRY(open_keys, session->keys(false));
  return with_keys(std::move(inner), seal_keys, open_keys, std::move(session));
}

caf::expected<std::unique_ptr<byte_stream>>
tls_stream::with_keys(std::unique_ptr<byte_stream> inner, const sealed::direction_keys& seal,
                      const sealed::direction_keys& open, tls_session_ptr session) {
  FERRY_TRY(sealer, sealed::record_cipher::create(seal, true));
  FERRY_TRY(opener, sealed::record_cipher::create(open, false));
  return std::unique_ptr<byte_stream>{
    new tls_stream(std::move(inner), std::move(session), std::move(sealer), std::move(opener))};
}

tls_stream::tls_stream(std::unique_ptr<byte_stream> inner, tls_session_ptr session,
                       sealed::record_cipher sealer, sealed::record_cipher opener)
  : inner_(std::move(inner)), session_(std::move(session)), sealer_(std::move(sealer)),
    opener_(std::move(opener)) {}

void tls_stream::interrupt() {
  interrupted_ = true;
  inner_->interrupt();
}

// ---- writing ----

caf::expected<void> tls_stream::seal_record(sealed::kind k, const std::vector<piece>& pieces,
                                            size_t len) {
  const size_t at = out_len_;
  out_len_ += len + record_overhead;
  const auto hdr = sealed::encode_header({k, static_cast<uint32_t>(len)});
  std::memcpy(out_.get() + at, hdr.data(), hdr.size());
  if (auto ok = sealer_.begin(hdr); !ok)
    return ok;
  uint8_t* dst = out_.get() + at + sealed::header_size;
  for (const auto& pc : pieces) {
    if (auto ok = sealer_.update(pc.at, pc.len, dst); !ok)
      return ok;
    dst += pc.len;
  }
  if (auto ok = sealer_.finish(dst); !ok)
    return ok;
  if (out_len_ >= out_flush_at)
    return flush_out();
  return {};
}

caf::expected<void> tls_stream::flush_out() {
  if (out_len_ == 0)
    return {};
  if (interrupted_)
    return stream_interrupted();
  iovec v{out_.get(), out_len_};
  auto ok = inner_->write_all(std::span<iovec>{&v, 1});
  out_len_ = 0;
  if (!ok)
    return interrupted_ ? stream_interrupted() : write_failed(ok.error());
  return {};
}

caf::expected<void> tls_stream::write_all(std::span<iovec> iov) {
  return write_placed(iov, iov.size());
}

// Pieces of one kind are sealed together into records of up to max_record
// bytes; page data from `placed_from` on goes in bulk records of its own.
caf::expected<void> tls_stream::write_placed(std::span<iovec> iov, size_t placed_from) {
  // Records are sealed while less than out_flush_at waits, each up to
  // max_record: room for both.
  if (!out_)
    out_ = std::make_unique_for_overwrite<uint8_t[]>(out_flush_at + sealed::max_record +
                                                     record_overhead);
  std::vector<piece> pieces;
  size_t len = 0;
  auto kind_now = sealed::kind::control;
  const auto seal_pending = [&]() -> caf::expected<void> {
    if (len == 0)
      return {};
    auto ok = seal_record(kind_now, pieces, len);
    pieces.clear();
    len = 0;
    return ok;
  };
  for (size_t i = 0; i < iov.size(); ++i) {
    const auto k = i >= placed_from ? sealed::kind::bulk : sealed::kind::control;
    if (k != kind_now)
      if (auto ok = seal_pending(); !ok)
        return ok;
    kind_now = k;
    const auto* base = static_cast<const uint8_t*>(iov[i].iov_base);
    size_t left = iov[i].iov_len;
    while (left > 0) {
      const size_t take = std::min(left, sealed::max_record - len);
      pieces.push_back({base, take});
      len += take;
      base += take;
      left -= take;
      if (len == sealed::max_record)
        if (auto ok = seal_pending(); !ok)
          return ok;
    }
  }
  if (auto ok = seal_pending(); !ok)
    return ok;
  return flush_out();
}

// ---- reading ----

caf::error tls_stream::read_error(const caf::error& why) const {
  if (interrupted_)
    return stream_interrupted();
  return make_ferry_error(errc::system_error,
                          "Unable to read from migration channel: " + describe(why));
}

caf::expected<bool> tls_stream::fill(size_t k) {
  if (!in_)
    in_ = std::make_unique_for_overwrite<uint8_t[]>(in_capacity);
  while (in_len_ - in_pos_ < k) {
    if (in_pos_ + k > in_capacity) { // no room behind: move the unread part to the front
      std::memmove(in_.get(), in_.get() + in_pos_, in_len_ - in_pos_);
      in_len_ -= in_pos_;
      in_pos_ = 0;
    }
    const size_t want = std::max(k - (in_len_ - in_pos_), read_ahead);
    auto r = inner_->read_some(in_.get() + in_len_, std::min(want, in_capacity - in_len_));
    if (!r)
      return read_error(r.error());
    if (*r == 0)
      return false;
    in_len_ += *r;
  }
  return true;
}

caf::expected<std::optional<sealed::header>> tls_stream::next_header() {
  FERRY_TRY(got, fill(sealed::header_size));
  if (!got) {
    if (in_len_ != in_pos_)
      return stream_closed_by_peer();
    return std::optional<sealed::header>{};
  }
  std::array<uint8_t, sealed::header_size> raw{};
  std::memcpy(raw.data(), in_.get() + in_pos_, sealed::header_size);
  in_pos_ += sealed::header_size;
  auto h = sealed::decode_header(raw);
  if (!h)
    return malformed(describe(h.error()));
  if (auto ok = opener_.begin(raw); !ok)
    return ok.error();
  return std::optional<sealed::header>{*h};
}

caf::expected<void> tls_stream::open_whole(const sealed::header& h) {
  FERRY_TRY(got, fill(h.length + sealed::tag_size));
  if (!got)
    return stream_closed_by_peer();
  uint8_t* body = in_.get() + in_pos_;
  if (auto ok = opener_.update(body, h.length, body); !ok)
    return ok;
  if (auto ok = opener_.finish(body + h.length); !ok)
    return malformed(describe(ok.error()));
  plain_at_ = in_pos_;
  plain_left_ = h.length;
  in_pos_ += h.length + sealed::tag_size;
  return {};
}

size_t tls_stream::serve(uint8_t* p, size_t n) {
  const size_t k = std::min(n, plain_left_);
  std::memcpy(p, in_.get() + plain_at_, k);
  plain_at_ += k;
  plain_left_ -= k;
  return k;
}

caf::expected<size_t> tls_stream::read_some(uint8_t* p, size_t n) {
  if (plain_left_ > 0)
    return serve(p, n);
  if (bulk_left_ > 0)
    return malformed("page data where a control record was due");
  FERRY_TRY(h, next_header());
  if (!h)
    return size_t{0};
  if (auto ok = open_whole(*h); !ok)
    return ok.error();
  return serve(p, n);
}

// A bulk record's bytes go from the socket (or what was read ahead) to `p`
// and are decrypted there; the read that ends the record checks its tag.
caf::expected<size_t> tls_stream::stream_bulk(uint8_t* p, size_t n) {
  size_t k = std::min(n, bulk_left_);
  if (in_len_ > in_pos_) {
    k = std::min(k, in_len_ - in_pos_);
    std::memcpy(p, in_.get() + in_pos_, k);
    in_pos_ += k;
  } else {
    auto r = inner_->read_some(p, k);
    if (!r)
      return read_error(r.error());
    if (*r == 0)
      return stream_closed_by_peer();
    k = *r;
  }
  if (auto ok = opener_.update(p, k, p); !ok)
    return ok.error();
  bulk_left_ -= k;
  if (bulk_left_ == 0) {
    FERRY_TRY(got, fill(sealed::tag_size));
    if (!got)
      return stream_closed_by_peer();
    auto ok = opener_.finish(in_.get() + in_pos_);
    in_pos_ += sealed::tag_size;
    if (!ok)
      return malformed(describe(ok.error()));
  }
  return k;
}

caf::expected<size_t> tls_stream::read_placed(uint8_t* p, size_t n) {
  if (plain_left_ > 0)
    return serve(p, n);
  if (bulk_left_ == 0) {
    FERRY_TRY(h, next_header());
    if (!h)
      return size_t{0};
    if (h->type == sealed::kind::control) {
      if (auto ok = open_whole(*h); !ok)
        return ok.error();
      return serve(p, n);
    }
    bulk_left_ = h->length;
  }
  return stream_bulk(p, n);
}

} // namespace ferry
