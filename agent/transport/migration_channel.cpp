#include "agent/transport/migration_channel.hpp"

#include "agent/transport/link_watch.hpp"
#include "agent/transport/sockets.hpp"
#include "agent/transport/tls_stream.hpp"
#include "common/error.hpp"
#include "common/spawn_attributes.hpp"
#include "protocol/crc32c.hpp"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>

extern char** environ;

namespace ferry {

namespace {

endpoint to_endpoint(const migration_address& a) {
  endpoint ep;
  if (a.type == migration_address::kind::unix_socket) {
    ep.type = endpoint::kind::unix_socket;
    ep.path = a.path;
  } else {
    ep.type = endpoint::kind::tcp;
    ep.host = a.host;
    ep.port = a.port;
  }
  return ep;
}

// Starts argv with one end of a pipe as its stdin (`child_reads`) or stdout.
caf::expected<std::pair<unique_fd, pid_t>> spawn_piped(const std::vector<std::string>& argv,
                                                       bool child_reads) {
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0)
    return make_system_error("pipe");
  unique_fd rd{p[0]}, wr{p[1]};
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  if (child_reads)
    posix_spawn_file_actions_adddup2(&fa, rd.get(), STDIN_FILENO);
  else
    posix_spawn_file_actions_adddup2(&fa, wr.get(), STDOUT_FILENO);
  std::vector<char*> args;
  args.reserve(argv.size() + 1);
  for (const auto& a : argv)
    args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  const spawn_attributes attr;
  pid_t pid = -1;
  const int rc = ::posix_spawnp(&pid, args[0], &fa, attr.get(), args.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) {
    errno = rc;
    return make_system_error("failed to start '" + argv[0] + "'");
  }
  return std::pair{child_reads ? std::move(wr) : std::move(rd), pid};
}

} // namespace

migration_channel::migration_channel(std::unique_ptr<byte_stream> stream)
  : stream_(std::move(stream)) {}

migration_channel::migration_channel(unique_fd fd, kind k, pid_t child) {
  const int raw = fd.get();
  stream_ = std::make_unique<fd_stream>(std::move(fd), k, child);
  if (k == kind::socket)
    watch_ = link_watch::add(raw, migration_link_timeout(), [this] {
      silent_ = true;
      interrupt();
    });
}

migration_channel::~migration_channel() {
  link_watch::remove(watch_);
}

caf::error migration_channel::cut_error() const {
  if (silent_)
    return make_ferry_error(errc::system_error,
                            "the migration link went silent: nothing heard from the peer for " +
                              std::to_string(migration_link_timeout().count()) + " ms");
  return stream_interrupted();
}

void migration_channel::keep_through_silence() {
  link_watch::remove(watch_);
  watch_ = 0;
  if (const int fd = stream_->socket_fd(); fd >= 0)
    clear_link_timeout(fd);
}

void migration_channel::interrupt() {
  interrupted_ = true;
  std::lock_guard lk{swap_mtx_};
  stream_->interrupt();
}

caf::expected<void> migration_channel::start_tls(const tls_context& ctx) {
  // The plain stream stays in place during the handshake, so interrupt()
  // can still cut it; only the swap itself is guarded.
  FERRY_TRY(session, tls_stream::handshake(*stream_, ctx));
  std::lock_guard lk{swap_mtx_};
  auto sealed = tls_stream::over(std::move(stream_), std::move(session));
  if (!sealed)
    return sealed.error(); // the plain stream went with it: the channel is unusable
  stream_ = std::move(*sealed);
  sealed_ = true;
  if (interrupted_)
    stream_->interrupt();
  return {};
}

caf::expected<void> migration_channel::read_exact(uint8_t* p, size_t n, bool placed) {
  while (n > 0) {
    auto r = placed ? stream_->read_placed(p, n) : stream_->read_some(p, n);
    if (!r)
      return interrupted_ ? cut_error() : r.error();
    if (*r == 0)
      return interrupted_ ? cut_error() : stream_closed_by_peer();
    received_.fetch_add(*r, std::memory_order_relaxed);
    p += *r;
    n -= *r;
  }
  return {};
}

std::pair<uint32_t, size_t> migration_channel::crc_and_length(std::span<const iovec> parts,
                                                              size_t placed_from) const {
  uint32_t crc = 0;
  size_t len = 0;
  for (size_t i = 0; i < parts.size(); ++i) {
    if (!sealed_ && i < placed_from)
      crc = crc32c(crc, {static_cast<const uint8_t*>(parts[i].iov_base), parts[i].iov_len});
    len += parts[i].iov_len;
  }
  return {crc, len};
}

caf::expected<void> migration_channel::send(mig::record_type type, std::span<const iovec> parts,
                                            size_t placed_from) {
  const auto [crc, len] = crc_and_length(parts, placed_from);
  auto hdr = mig::encode_header(type, static_cast<uint32_t>(len), crc);
  std::vector<iovec> iov;
  iov.reserve(parts.size() + 1);
  iov.push_back({hdr.data(), hdr.size()});
  size_t placed_at = SIZE_MAX;
  for (size_t i = 0; i < parts.size(); ++i) {
    if (i == placed_from)
      placed_at = iov.size();
    if (parts[i].iov_len != 0)
      iov.push_back(parts[i]);
  }
  if (interrupted_)
    return cut_error();
  if (auto ok = stream_->write_placed(iov, placed_at); !ok)
    return interrupted_ ? cut_error() : ok.error();
  sent_.fetch_add(hdr.size() + len, std::memory_order_relaxed);
  return {};
}

caf::expected<void> migration_channel::send_live(std::span<const iovec> head,
                                                 std::span<const iovec> pages) {
  auto [crc, len] = crc_and_length(head, head.size());
  for (const auto& part : pages)
    len += part.iov_len;
  auto hdr = mig::encode_header(mig::record_type::live_pages, static_cast<uint32_t>(len), crc);
  std::vector<iovec> iov;
  iov.reserve(head.size() + 1);
  iov.push_back({hdr.data(), hdr.size()});
  for (const auto& part : head)
    if (part.iov_len != 0)
      iov.push_back(part);
  std::vector<iovec> live(pages.begin(), pages.end());
  if (interrupted_)
    return cut_error();
  if (auto ok = stream_->write_all(iov); !ok)
    return interrupted_ ? cut_error() : ok.error();
  if (auto ok = stream_->write_zero_copy(live); !ok)
    return interrupted_ ? cut_error() : ok.error();
  sent_.fetch_add(hdr.size() + len, std::memory_order_relaxed);
  return {};
}

caf::expected<bool> migration_channel::flush_zero_copy() {
  auto r = stream_->flush_zero_copy();
  if (!r && interrupted_)
    return cut_error();
  return r;
}

caf::expected<void> migration_channel::send(mig::record_type type,
                                            std::span<const uint8_t> payload) {
  const iovec part{const_cast<uint8_t*>(payload.data()), payload.size()};
  return send(type, std::span<const iovec>{&part, 1});
}

caf::expected<mig::record_header> migration_channel::receive_header() {
  std::array<uint8_t, mig::header_size> raw{};
  if (auto ok = read_exact(raw.data(), raw.size()); !ok)
    return ok.error();
  FERRY_TRY(h, mig::decode_header(raw));
  payload_crc_ = 0;
  payload_checked_ = !sealed_;
  return h;
}

caf::expected<void> migration_channel::read_payload(uint8_t* p, size_t n, bool placed) {
  if (auto ok = read_exact(p, n, placed); !ok)
    return ok;
  if (payload_checked_ && !placed)
    payload_crc_ = crc32c(payload_crc_, {p, n});
  return {};
}

caf::expected<void> migration_channel::end_payload(const mig::record_header& h) {
  if (!payload_checked_)
    return {};
  return mig::check_crc(h, payload_crc_);
}

caf::expected<void> migration_channel::receive_payload(const mig::record_header& h,
                                                       std::vector<uint8_t>& payload) {
  payload.resize(h.length);
  if (auto ok = read_payload(payload.data(), payload.size()); !ok)
    return ok;
  return end_payload(h);
}

caf::expected<mig::record_header> migration_channel::receive(std::vector<uint8_t>& payload) {
  FERRY_TRY(h, receive_header());
  if (auto ok = receive_payload(h, payload); !ok)
    return ok.error();
  return h;
}

caf::expected<std::unique_ptr<migration_channel>> open_outgoing(const migration_address& a) {
  using k = migration_address::kind;
  if (a.type == k::tcp || a.type == k::unix_socket) {
    FERRY_TRY(fd, connect_to(to_endpoint(a), migration_link_timeout()));
    return std::make_unique<migration_channel>(std::move(fd), migration_channel::kind::socket);
  }
  if (a.type == k::exec) {
    FERRY_TRY(piped, spawn_piped(a.argv, true));
    return std::make_unique<migration_channel>(std::move(piped.first),
                                               migration_channel::kind::pipe, piped.second);
  }
  const int flags = O_WRONLY | O_CREAT | O_CLOEXEC | (a.offset == 0 ? O_TRUNC : 0);
  unique_fd fd{::open(a.path.c_str(), flags, 0600)};
  if (!fd)
    return make_system_error("Could not open '" + a.path + "'");
  if (a.offset != 0 && ::lseek(fd.get(), static_cast<off_t>(a.offset), SEEK_SET) < 0)
    return make_system_error("Could not seek '" + a.path + "'");
  return std::make_unique<migration_channel>(std::move(fd), migration_channel::kind::file);
}

caf::expected<std::unique_ptr<migration_listener>>
migration_listener::create(const migration_address& a) {
  auto l = std::make_unique<migration_listener>();
  l->addr_ = a;
  if (a.bidirectional()) {
    FERRY_TRY(b, listen_on(to_endpoint(a)));
    l->fd_ = std::move(b.fd);
    if (a.type == migration_address::kind::tcp)
      l->addr_.port = b.port;
  }
  return l;
}

caf::expected<std::unique_ptr<migration_channel>> migration_listener::accept(int timeout_ms) {
  using k = migration_address::kind;
  if (!addr_.bidirectional()) {
    if (used_)
      return make_ferry_error(errc::invalid_argument,
                              addr_.describe() + " carries a single channel");
    used_ = true;
    if (addr_.type == k::exec) {
      FERRY_TRY(piped, spawn_piped(addr_.argv, false));
      return std::make_unique<migration_channel>(std::move(piped.first),
                                                 migration_channel::kind::pipe, piped.second);
    }
    unique_fd fd{::open(addr_.path.c_str(), O_RDONLY | O_CLOEXEC)};
    if (!fd)
      return make_system_error("Could not open '" + addr_.path + "'");
    if (::lseek(fd.get(), static_cast<off_t>(addr_.offset), SEEK_SET) < 0)
      return make_system_error("Could not seek '" + addr_.path + "'");
    return std::make_unique<migration_channel>(std::move(fd), migration_channel::kind::file);
  }
  if (!fd_)
    return make_ferry_error(errc::system_error, addr_.describe() + " is no longer listened on");
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (!interrupted_) {
    pollfd p{fd_.get(), POLLIN, 0};
    ::poll(&p, 1, 100);
    unique_fd c{::accept4(fd_.get(), nullptr, nullptr, SOCK_CLOEXEC)};
    if (c) {
      int one = 1;
      ::setsockopt(c.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      set_link_timeout(c.get(), migration_link_timeout());
      return std::make_unique<migration_channel>(std::move(c), migration_channel::kind::socket);
    }
    if (timeout_ms >= 0 && std::chrono::steady_clock::now() > deadline)
      return make_ferry_error(errc::system_error,
                              "timed out waiting for a migration channel on " + addr_.describe());
  }
  return make_ferry_error(errc::system_error, "migration listener interrupted");
}

void migration_listener::stop_listening() {
  if (!fd_)
    return;
  fd_.reset();
  // A unix socket's file would outlive its listener and refuse the next
  // bind to the same path.
  if (addr_.type == migration_address::kind::unix_socket)
    ::unlink(addr_.path.c_str());
}

} // namespace ferry
