#pragma once
// posix_spawn attributes for a program an agent starts: the agent blocks
// some signals in every thread and ignores SIGPIPE, and the child must
// inherit neither. `flags` adds more (POSIX_SPAWN_SETSID, ...).

#include <signal.h>
#include <spawn.h>

namespace ferry {

class spawn_attributes {
public:
  explicit spawn_attributes(short flags = 0) {
    posix_spawnattr_init(&attr_);
    sigset_t none;
    sigemptyset(&none);
    posix_spawnattr_setsigmask(&attr_, &none);
    sigset_t dfl;
    sigemptyset(&dfl);
    sigaddset(&dfl, SIGPIPE);
    posix_spawnattr_setsigdefault(&attr_, &dfl);
    posix_spawnattr_setflags(
      &attr_, static_cast<short>(flags | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF));
  }
  ~spawn_attributes() { posix_spawnattr_destroy(&attr_); }
  spawn_attributes(const spawn_attributes&) = delete;
  spawn_attributes& operator=(const spawn_attributes&) = delete;

  const posix_spawnattr_t* get() const { return &attr_; }

private:
  posix_spawnattr_t attr_;
};

} // namespace ferry
