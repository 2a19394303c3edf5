#include "common/spawn_attributes.hpp"

#include <signal.h>

namespace ferry {

spawn_attributes::spawn_attributes(short flags) {
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

spawn_attributes::~spawn_attributes() {
  posix_spawnattr_destroy(&attr_);
}

} // namespace ferry
