#include "agent/transport/loopback_stream.hpp"

#include "common/error.hpp"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <optional>

namespace ferry {

namespace {

// What both ends share: one queue per direction, one fault.
struct loopback_link {
  std::mutex mtx;
  std::condition_variable cv;
  std::deque<uint8_t> queue[2]; // [0]: a -> b, [1]: b -> a
  bool write_closed[2] = {false, false};
  bool broken = false; // interrupted or reset: both ends fail
  loopback_faults faults;
  bool fault_on = false;
  // The bound on what one direction buffers: a writer waits for its reader,
  // as on a socket.
  static constexpr size_t capacity = 4u << 20;

  // Called with the lock held: has the fault started?
  bool faulty() {
    if (faults.fault == loopback_faults::kind::none)
      return false;
    if (!fault_on && (!faults.trigger || faults.trigger()))
      fault_on = true;
    return fault_on;
  }
};

caf::error reset_error() {
  return make_ferry_error(errc::system_error,
                          "Unable to read from migration channel: Connection reset by peer");
}

class loopback_stream final : public byte_stream {
public:
  loopback_stream(std::shared_ptr<loopback_link> link, int out)
    : link_(std::move(link)), out_(out), in_(1 - out) {}
  ~loopback_stream() override {
    std::lock_guard lk{link_->mtx};
    link_->write_closed[out_] = true;
    link_->cv.notify_all();
  }

  caf::expected<void> write_all(std::span<iovec> iov) override {
    std::unique_lock lk{link_->mtx};
    for (const auto& part : iov) {
      const auto* p = static_cast<const uint8_t*>(part.iov_base);
      size_t left = part.iov_len;
      while (left > 0) {
        if (auto err = blocked(lk))
          return *err;
        auto& q = link_->queue[out_];
        if (q.size() >= loopback_link::capacity) {
          link_->cv.wait(lk);
          continue;
        }
        const size_t n = std::min(left, loopback_link::capacity - q.size());
        q.insert(q.end(), p, p + n);
        p += n;
        left -= n;
        link_->cv.notify_all();
      }
    }
    return {};
  }

  caf::expected<size_t> read_some(uint8_t* p, size_t n) override {
    std::unique_lock lk{link_->mtx};
    for (;;) {
      if (auto err = blocked(lk))
        return *err;
      auto& q = link_->queue[in_];
      if (!q.empty()) {
        size_t take = std::min(n, q.size());
        if (link_->faults.max_read != 0)
          take = std::min(take, link_->faults.max_read);
        std::copy_n(q.begin(), take, p);
        q.erase(q.begin(), q.begin() + static_cast<std::ptrdiff_t>(take));
        link_->cv.notify_all();
        return take;
      }
      if (link_->write_closed[in_]) {
        peer_ended_ = true;
        return size_t{0};
      }
      link_->cv.wait(lk);
    }
  }

  bool wait_readable(int timeout_ms) override {
    std::unique_lock lk{link_->mtx};
    return link_->cv.wait_for(lk, std::chrono::milliseconds(timeout_ms), [this] {
      if (interrupted_ || link_->broken)
        return true;
      // A reset is seen at once; a stalled link never has anything to read.
      if (link_->faulty())
        return link_->faults.fault == loopback_faults::kind::reset;
      return !link_->queue[in_].empty() || link_->write_closed[in_];
    });
  }

  void interrupt() override {
    interrupted_ = true;
    std::lock_guard lk{link_->mtx};
    link_->broken = true;
    link_->cv.notify_all();
  }

  caf::expected<void> finish() override {
    std::lock_guard lk{link_->mtx};
    link_->write_closed[out_] = true;
    link_->cv.notify_all();
    return {};
  }

private:
  // Why this end cannot move now: interrupted, reset, or (stalled) nothing
  // until it is interrupted. Called with the lock held; may wait.
  std::optional<caf::error> blocked(std::unique_lock<std::mutex>& lk) {
    for (;;) {
      if (interrupted_)
        return stream_interrupted();
      if (link_->broken)
        return reset_error();
      if (!link_->faulty())
        return std::nullopt;
      if (link_->faults.fault == loopback_faults::kind::reset) {
        link_->broken = true;
        link_->cv.notify_all();
        return reset_error();
      }
      link_->cv.wait(lk); // stalled: only an interrupt ends it
    }
  }

  std::shared_ptr<loopback_link> link_;
  int out_;
  int in_;
};

} // namespace

std::pair<std::unique_ptr<byte_stream>, std::unique_ptr<byte_stream>>
make_loopback_pair(const loopback_faults& faults) {
  auto link = std::make_shared<loopback_link>();
  link->faults = faults;
  return {std::make_unique<loopback_stream>(link, 0), std::make_unique<loopback_stream>(link, 1)};
}

} // namespace ferry
