#pragma once
// Notices a TCP link that has gone silent even while nobody reads or writes
// on it (a source between rate-limited bursts, a destination waiting for
// pages): one process-wide thread ("link-watch") looks at every watched
// socket's TCP_INFO four times a second and calls its owner back once the
// peer has not been heard from (no ACK, no data; keepalive probes make an
// idle but healthy peer answer every second) for longer than the timeout.
// TCP_USER_TIMEOUT alone counts from the first unacknowledged byte, which
// a rate-limited writer may send seconds after the link died.

#include <chrono>
#include <cstdint>
#include <functional>

namespace ferry::link_watch {

// Watches `fd` (a connected TCP socket with keepalive on; anything else is
// ignored and 0 returned). `on_silent` runs once, on the watch thread; it
// must not call back into link_watch. A zero timeout watches nothing.
uint64_t add(int fd, std::chrono::milliseconds timeout, std::function<void()> on_silent);
// Stops watching; once it returns, the callback is not running and never
// will. 0 is ignored.
void remove(uint64_t id);

} // namespace ferry::link_watch
