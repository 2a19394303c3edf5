#include "agent/transport/fd_stream.hpp"

#include "common/error.hpp"

#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

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

caf::expected<void> fd_stream::write_all(std::span<iovec> iov) {
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
      n = ::sendmsg(fd_.get(), &msg, MSG_NOSIGNAL);
    } else {
      n = ::writev(fd_.get(), iov.data() + i, n_iov);
    }
    if (n < 0) {
      if (errno == EINTR)
        continue;
      if (interrupted_)
        return stream_interrupted();
      return make_system_error("Unable to write to migration channel");
    }
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

caf::expected<size_t> fd_stream::read_some(uint8_t* p, size_t n) {
  for (;;) {
    const ssize_t r = ::read(fd_.get(), p, n);
    if (r == 0)
      return interrupted_ ? caf::expected<size_t>{stream_interrupted()} : size_t{0};
    if (r > 0)
      return static_cast<size_t>(r);
    if (errno == EINTR)
      continue;
    if (interrupted_)
      return stream_interrupted();
    return make_system_error("Unable to read from migration channel");
  }
}

} // namespace ferry
