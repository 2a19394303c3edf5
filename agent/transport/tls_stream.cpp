#include "agent/transport/tls_stream.hpp"

#include "common/error.hpp"

#include <algorithm>

namespace ferry {

caf::expected<tls_session_ptr> tls_stream::handshake(byte_stream& inner, const tls_context& ctx) {
  const int fd = inner.socket_fd();
  if (fd < 0)
    return make_ferry_error(errc::invalid_argument, "TLS needs a socket channel");
  return ctx.handshake(fd);
}

std::unique_ptr<byte_stream> tls_stream::over(std::unique_ptr<byte_stream> inner,
                                              tls_session_ptr session) {
  return std::unique_ptr<byte_stream>{new tls_stream(std::move(inner), std::move(session))};
}

void tls_stream::interrupt() {
  interrupted_ = true;
  inner_->interrupt();
}

namespace {
// TLS 1.3's largest record payload.
constexpr size_t record_payload = size_t{16} * 1024;

caf::error write_failed(const caf::error& why) {
  return make_ferry_error(errc::system_error,
                          "Unable to write to migration channel: " + describe(why));
}
} // namespace

caf::expected<void> tls_stream::seal(const uint8_t* p, size_t n) {
  size_t done = 0;
  while (done < n) {
    if (interrupted_)
      return stream_interrupted();
    auto w = session_->write(p + done, n - done);
    if (!w)
      return write_failed(w.error());
    done += *w;
  }
  return {};
}

caf::expected<void> tls_stream::seal_gathered() {
  auto ok = seal(gather_.data(), gather_.size());
  gather_.clear();
  return ok;
}

// Pieces go into whole records: adjacent pieces (pages next to each other in
// guest memory) are one span; spans are gathered up to a record's payload,
// and a span that fills records of its own is sealed in place, uncopied.
caf::expected<void> tls_stream::write_all(std::span<iovec> iov) {
  gather_.reserve(record_payload);
  for (size_t i = 0; i < iov.size();) {
    const auto* base = static_cast<const uint8_t*>(iov[i].iov_base);
    size_t len = iov[i].iov_len;
    for (++i; i < iov.size() && iov[i].iov_base == base + len; ++i)
      len += iov[i].iov_len;
    while (len > 0) {
      if (gather_.empty() && len >= record_payload) {
        const size_t whole = len - len % record_payload;
        if (auto ok = seal(base, whole); !ok)
          return ok;
        base += whole;
        len -= whole;
        continue;
      }
      const size_t take = std::min(len, record_payload - gather_.size());
      gather_.insert(gather_.end(), base, base + take);
      base += take;
      len -= take;
      if (gather_.size() == record_payload)
        if (auto ok = seal_gathered(); !ok)
          return ok;
    }
  }
  if (!gather_.empty())
    if (auto ok = seal_gathered(); !ok)
      return ok;
  if (auto ok = session_->flush(); !ok)
    return write_failed(ok.error());
  return {};
}

caf::expected<size_t> tls_stream::read_some(uint8_t* p, size_t n) {
  auto r = session_->read(p, n);
  if (!r)
    return interrupted_ ? stream_interrupted()
                        : make_ferry_error(errc::system_error, "Unable to read from migration "
                                                               "channel: " +
                                                                 describe(r.error()));
  return *r;
}

} // namespace ferry
