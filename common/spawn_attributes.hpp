#pragma once
// posix_spawn attributes for a program an agent starts: the agent blocks
// some signals in every thread and ignores SIGPIPE, and the child must
// inherit neither. `flags` adds more (POSIX_SPAWN_SETSID, ...).

#include <spawn.h>

namespace ferry {

class spawn_attributes {
public:
  explicit spawn_attributes(short flags = 0);
  ~spawn_attributes();
  spawn_attributes(const spawn_attributes&) = delete;
  spawn_attributes& operator=(const spawn_attributes&) = delete;

  const posix_spawnattr_t* get() const { return &attr_; }

private:
  posix_spawnattr_t attr_;
};

} // namespace ferry
