#pragma once
// The MigrationStatus state machine of QEMU, for both sides of a migration,
// as one transition table: step(side, state, event) either names the next
// state or refuses, leaving the caller's state as it was. Only the owner of
// a migration (its controlling thread) steps it; nothing shares it.

#include <caf/expected.hpp>

#include <cstdint>
#include <string_view>

namespace ferry {

// Values in the schema's order (MigrationStatus); a test holds the names to
// the compiled-in schema.
enum class migration_status : uint8_t {
  none,
  setup,
  cancelling,
  cancelled,
  active,
  postcopy_active,
  postcopy_paused,
  postcopy_recover,
  completed,
  failed,
  colo,
  pre_switchover,
  device,
  wait_unplug,
};
inline constexpr size_t migration_status_count = 14;

enum class migration_side : uint8_t { source, destination };

enum class migration_event : uint8_t {
  start,             // migrate / migrate-incoming accepted
  setup_done,        // channels up, first pass may begin
  wait_unplug,       // a failover device must be unplugged first
  unplug_done,       // the guest unplugged it
  pause_switchover,  // pause-before-switchover reached the switchover point
  resume_switchover, // migrate-continue
  start_postcopy,    // migrate-start-postcopy took effect
  postcopy_broken,   // the postcopy channel failed: pause, keep the guest
  recover,           // migrate-recover / migrate resume=true
  recovered,         // postcopy resumed
  recover_failed,    // recovery attempt failed
  start_colo,        // first checkpoint done with x-colo
  colo_failover,     // COLO failover finished
  complete,          // everything arrived: the destination owns the guest
  cancel,            // migrate_cancel
  cancel_done,       // the cancel finished cleaning up
  fail,              // an error ended the migration
};
inline constexpr size_t migration_event_count = 17;

std::string_view to_string(migration_status s);
std::string_view to_string(migration_event e);

// The next state, or an error saying the event does not apply in `from`.
caf::expected<migration_status> step(migration_side side, migration_status from,
                                     migration_event ev);

// States in which a migration is under way (QEMU's migration_is_running).
bool migration_running(migration_status s);

} // namespace ferry
