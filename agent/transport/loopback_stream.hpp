#pragma once
// Two byte streams joined in memory, for tests of the engines over a
// transport that misbehaves on cue: reads cut short, a reset, a stall. A
// fault starts when its trigger first answers true (checked at every read
// and write), so a test can aim it at an engine phase; the bytes before it
// flow normally. Interrupting either end ends both, as a socket shutdown is
// seen by its peer.

#include "agent/transport/byte_stream.hpp"

#include <functional>
#include <memory>
#include <utility>

namespace ferry {

struct loopback_faults {
  // Every read returns at most this many bytes (0 = no limit): a correct
  // reader copes, so migrations over it still complete.
  size_t max_read = 0;
  enum class kind { none, reset, stall };
  kind fault = kind::none;
  // When the fault starts; empty = at once.
  std::function<bool()> trigger;
};

// {a, b}: what a writes, b reads and back. `faults` apply to both ends.
std::pair<std::unique_ptr<byte_stream>, std::unique_ptr<byte_stream>>
make_loopback_pair(const loopback_faults& faults = {});

} // namespace ferry
