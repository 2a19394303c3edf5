#include "agent/transport/fd_stream.hpp"

#include "common/error.hpp"

#include <limits.h>
#include <linux/errqueue.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace ferry {

caf::error stream_interrupted() {
  return make_ferry_error(errc::system_error, "migration channel interrupted");
}

caf::error stream_closed_by_peer() {
  return make_ferry_error(errc::system_error, "migration channel closed by the peer");
}

fd_stream::fd_stream(unique_fd fd, kind k, pid_t child)
  : fd_(std::move(fd)), kind_(k), child_(child) {}

fd_stream::~fd_stream() {
  fd_.reset(); // the command sees end of file first
  const pid_t pid = child_;
  if (pid <= 0)
    return;
  int status = 0;
  for (int i = 0; i < 50; ++i) {
    if (::waitpid(pid, &status, WNOHANG) == pid)
      return;
    ::usleep(10'000);
  }
  ::kill(pid, SIGKILL);
  ::waitpid(pid, &status, 0);
}

caf::expected<void> fd_stream::finish() {
  fd_.reset();
  if (child_ <= 0)
    return {};
  int status = 0;
  // interrupt() may kill the command meanwhile: then this wait ends.
  const pid_t pid = child_;
  while (::waitpid(pid, &status, 0) < 0)
    if (errno != EINTR)
      return make_system_error("waitpid");
  child_ = -1;
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
    return {};
  return make_ferry_error(errc::system_error,
                          "the migration command " +
                            (WIFEXITED(status)
                               ? "exited with status " + std::to_string(WEXITSTATUS(status))
                               : "was killed by signal " + std::to_string(WTERMSIG(status))));
}

bool fd_stream::wait_readable(int timeout_ms) {
  pollfd p{fd_.get(), POLLIN, 0};
  return ::poll(&p, 1, timeout_ms) != 0;
}

void fd_stream::interrupt() {
  interrupted_ = true;
  if (kind_ == kind::socket)
    ::shutdown(fd_.get(), SHUT_RDWR);
  else if (child_ > 0)
    ::kill(child_, SIGKILL);
}

caf::expected<void> byte_stream::enable_zero_copy() {
  return make_ferry_error(errc::invalid_argument,
                          "Zero copy send feature not detected in host kernel");
}

caf::expected<void> fd_stream::write_all(std::span<iovec> iov) {
  return send_iov(iov, 0);
}

caf::expected<void> fd_stream::send_iov(std::span<iovec> iov, int flags) {
  size_t i = 0;
  while (i < iov.size()) {
    if (interrupted_)
      return stream_interrupted();
    const int n_iov = static_cast<int>(std::min<size_t>(iov.size() - i, IOV_MAX));
    ssize_t n = 0;
    if (kind_ == kind::socket) {
      msghdr msg{};
      msg.msg_iov = iov.data() + i;
      msg.msg_iovlen = static_cast<size_t>(n_iov);
      n = ::sendmsg(fd_.get(), &msg, MSG_NOSIGNAL | flags);
    } else {
      n = ::writev(fd_.get(), iov.data() + i, n_iov);
    }
    if (n < 0) {
      if (errno == EINTR)
        continue;
      // Too many zero-copy sends in flight for the socket's option memory:
      // take their completions, then try again.
      if (errno == ENOBUFS && (flags & MSG_ZEROCOPY) != 0) {
        if (!reap_completions()) {
          pollfd p{fd_.get(), 0, 0};
          (void) ::poll(&p, 1, 10);
        }
        continue;
      }
      if (interrupted_)
        return stream_interrupted();
      note_failure(errno);
      return make_system_error("Unable to write to migration channel");
    }
    if ((flags & MSG_ZEROCOPY) != 0 && n > 0)
      ++zc_sent_;
    auto left = static_cast<size_t>(n);
    while (i < iov.size() && left >= iov[i].iov_len)
      left -= iov[i++].iov_len;
    if (left > 0) {
      iov[i].iov_base = static_cast<uint8_t*>(iov[i].iov_base) + left;
      iov[i].iov_len -= left;
    }
  }
  return {};
}

caf::expected<void> fd_stream::enable_zero_copy() {
  const int one = 1;
  if (kind_ != kind::socket ||
      ::setsockopt(fd_.get(), SOL_SOCKET, SO_ZEROCOPY, &one, sizeof one) != 0)
    return byte_stream::enable_zero_copy();
  zero_copy_ = true;
  return {};
}

caf::expected<void> fd_stream::write_zero_copy(std::span<iovec> iov) {
  return send_iov(iov, zero_copy_ ? MSG_ZEROCOPY : 0);
}

bool fd_stream::reap_completions() {
  bool any = false;
  for (;;) {
    alignas(cmsghdr) char control[128];
    msghdr msg{};
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    if (::recvmsg(fd_.get(), &msg, MSG_ERRQUEUE | MSG_DONTWAIT) < 0)
      return any;
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
      const bool recverr = (c->cmsg_level == SOL_IP && c->cmsg_type == IP_RECVERR) ||
                           (c->cmsg_level == SOL_IPV6 && c->cmsg_type == IPV6_RECVERR);
      if (!recverr)
        continue;
      sock_extended_err err{};
      std::memcpy(&err, CMSG_DATA(c), sizeof err);
      if (err.ee_origin != SO_EE_ORIGIN_ZEROCOPY)
        continue;
      // ids ee_info .. ee_data, inclusive (they wrap at 2^32).
      zc_done_ += err.ee_data - err.ee_info + 1;
      if ((err.ee_code & SO_EE_CODE_ZEROCOPY_COPIED) != 0)
        zc_copied_ = true;
      any = true;
    }
  }
}

caf::expected<bool> fd_stream::flush_zero_copy() {
  while (zc_done_ != zc_sent_) {
    if (interrupted_)
      return stream_interrupted();
    if (reap_completions())
      continue;
    // Completions are signalled as an error condition on the socket.
    pollfd p{fd_.get(), 0, 0};
    if (::poll(&p, 1, 100) < 0 && errno != EINTR)
      return make_system_error("Unable to flush zero-copy sends");
  }
  const bool copied = zc_copied_;
  zc_copied_ = false;
  return copied;
}

caf::expected<size_t> fd_stream::read_some(uint8_t* p, size_t n) {
  for (;;) {
    const ssize_t r = ::read(fd_.get(), p, n);
    if (r == 0) {
      if (interrupted_)
        return stream_interrupted();
      peer_ended_ = true;
      return size_t{0};
    }
    if (r > 0)
      return static_cast<size_t>(r);
    if (errno == EINTR)
      continue;
    if (interrupted_)
      return stream_interrupted();
    note_failure(errno);
    return make_system_error("Unable to read from migration channel");
  }
}

} // namespace ferry
