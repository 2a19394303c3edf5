#pragma once
// The live threads of a guest's migrations, by name and host thread id, for
// query-migrationthreads. A thread registers itself for as long as a token
// lives, so the list never names a thread that has ended.

#include "common/thread_name.hpp"

#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace ferry {

class thread_registry {
public:
  class token {
  public:
    token() = default;
    token(thread_registry* r, pid_t tid) : r_(r), tid_(tid) {}
    token(token&& o) noexcept : r_(std::exchange(o.r_, nullptr)), tid_(o.tid_) {}
    token& operator=(token&&) = delete;
    token(const token&) = delete;
    token& operator=(const token&) = delete;
    ~token() {
      if (r_ != nullptr)
        r_->leave(tid_);
    }

  private:
    thread_registry* r_ = nullptr;
    pid_t tid_ = 0;
  };

  // Registers the calling thread.
  [[nodiscard]] token enter(std::string name) {
    const auto tid = static_cast<pid_t>(::syscall(SYS_gettid));
    std::lock_guard lk{mtx_};
    threads_.emplace_back(std::move(name), tid);
    return token{this, tid};
  }

  std::vector<std::pair<std::string, pid_t>> list() const {
    std::lock_guard lk{mtx_};
    return threads_;
  }

private:
  void leave(pid_t tid) {
    std::lock_guard lk{mtx_};
    std::erase_if(threads_, [&](const auto& t) { return t.second == tid; });
  }

  mutable std::mutex mtx_;
  std::vector<std::pair<std::string, pid_t>> threads_;
};

// Names the calling thread (as ps/top show it) and registers it, if there
// is a registry.
inline thread_registry::token name_migration_thread(thread_registry* r, const std::string& name) {
  name_this_thread(name);
  return r != nullptr ? r->enter(name) : thread_registry::token{};
}

} // namespace ferry
