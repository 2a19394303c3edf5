#include "agent/transport/link_watch.hpp"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sys/socket.h>

#include <algorithm>
#include <condition_variable>
#include <map>
#include <mutex>
#include <thread>

namespace ferry::link_watch {

namespace {

constexpr auto period = std::chrono::milliseconds(250);

struct entry {
  int fd;
  std::chrono::milliseconds timeout;
  std::function<void()> on_silent;
  bool fired = false;
};

// How long ago the peer was last heard from on `fd`, if the kernel says.
bool heard_ms_ago(int fd, uint32_t& ms) {
  tcp_info info{};
  socklen_t len = sizeof info;
  if (::getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &len) != 0)
    return false;
  ms = std::min(info.tcpi_last_ack_recv, info.tcpi_last_data_recv);
  return true;
}

class watcher {
public:
  ~watcher() {
    {
      std::lock_guard lk{mtx_};
      stopping_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable())
      thread_.join();
  }

  uint64_t add(int fd, std::chrono::milliseconds timeout, std::function<void()> on_silent) {
    std::lock_guard lk{mtx_};
    const uint64_t id = ++last_id_;
    entries_.emplace(id, entry{fd, timeout, std::move(on_silent)});
    if (!thread_.joinable())
      thread_ = std::thread{[this] { run(); }};
    return id;
  }

  void remove(uint64_t id) {
    std::lock_guard lk{mtx_};
    entries_.erase(id);
  }

private:
  void run() {
    pthread_setname_np(pthread_self(), "link-watch");
    std::unique_lock lk{mtx_};
    while (!cv_.wait_for(lk, period, [this] { return stopping_; })) {
      // Callbacks run under the lock: remove() returning means the
      // callback is not running.
      for (auto& [id, e] : entries_) {
        uint32_t ms = 0;
        // One period early rather than one late: the cut comes within the
        // timeout, never after it.
        if (e.fired || !heard_ms_ago(e.fd, ms) || ms + period.count() <= e.timeout.count())
          continue;
        e.fired = true;
        e.on_silent();
      }
    }
  }

  std::mutex mtx_;
  std::condition_variable cv_;
  std::map<uint64_t, entry> entries_;
  uint64_t last_id_ = 0;
  bool stopping_ = false;
  std::thread thread_;
};

watcher& the_watcher() {
  static watcher w;
  return w;
}

bool is_tcp(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0)
    return false;
  return ss.ss_family == AF_INET || ss.ss_family == AF_INET6;
}

} // namespace

uint64_t add(int fd, std::chrono::milliseconds timeout, std::function<void()> on_silent) {
  if (timeout.count() <= 0 || !is_tcp(fd))
    return 0;
  return the_watcher().add(fd, timeout, std::move(on_silent));
}

void remove(uint64_t id) {
  if (id != 0)
    the_watcher().remove(id);
}

} // namespace ferry::link_watch
