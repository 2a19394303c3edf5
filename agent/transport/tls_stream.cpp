#include "agent/transport/tls_stream.hpp"

#include "common/error.hpp"

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

caf::expected<void> tls_stream::write_all(std::span<iovec> iov) {
  for (const auto& part : iov) {
    size_t done = 0;
    while (done < part.iov_len) {
      if (interrupted_)
        return stream_interrupted();
      auto n =
        session_->write(static_cast<const uint8_t*>(part.iov_base) + done, part.iov_len - done);
      if (!n)
        return make_ferry_error(errc::system_error,
                                "Unable to write to migration channel: " + describe(n.error()));
      done += *n;
    }
  }
  if (auto ok = session_->flush(); !ok)
    return make_ferry_error(errc::system_error,
                            "Unable to write to migration channel: " + describe(ok.error()));
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
