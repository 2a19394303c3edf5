#pragma once
// What a restarted agent needs to take its running guests back: one file
// per guest in the run directory (RUN_DIR/NAME.guest, JSON), written when
// the guest starts and removed when it ends. The process is recognised by
// its pid *and* its start time (a pid alone may have been reused).

#include "actors/guest_spec.hpp"

#include <caf/expected.hpp>

#include <optional>
#include <string>
#include <vector>

namespace ferry {

struct guest_record {
  guest_info info;
  uint64_t start_time = 0; // /proc/PID/stat starttime (clock ticks after boot)
};

// The process's start time, if it exists.
std::optional<uint64_t> process_start_time(int pid);

caf::expected<void> write_guest_record(const std::string& run_dir, const guest_record& r);
void remove_guest_record(const std::string& run_dir, const std::string& name);
// Every record in `run_dir`; unreadable ones are skipped with a warning.
std::vector<guest_record> read_guest_records(const std::string& run_dir);

} // namespace ferry
