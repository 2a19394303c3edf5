#include "agent/migration/migration_state.hpp"

#include "common/error.hpp"

#include <array>
#include <string>

namespace ferry {

namespace {

using st = migration_status;
using ev = migration_event;
using side = migration_side;

struct edge {
  side who;
  st from;
  ev on;
  st to;
};

// Every legal transition. A pair not listed is refused.
constexpr edge table[] = {
  // A new migration may follow none or any finished one.
  {side::source, st::none, ev::start, st::setup},              // none --start--> setup
  {side::source, st::completed, ev::start, st::setup},         // completed --start--> setup
  {side::source, st::failed, ev::start, st::setup},            // failed --start--> setup
  {side::source, st::cancelled, ev::start, st::setup},         // cancelled --start--> setup
  {side::source, st::setup, ev::setup_done, st::active},       // setup --setup_done--> active
  {side::source, st::setup, ev::wait_unplug, st::wait_unplug}, // setup --wait_unplug--> wait-unplug
  {side::source, st::wait_unplug, ev::unplug_done,
   st::active}, // wait-unplug --unplug_done--> active
  {side::source, st::active, ev::pause_switchover,
   st::pre_switchover}, // active --pause--> pre-switchover
  {side::source, st::pre_switchover, ev::resume_switchover,
   st::device},                                            // pre-switchover --continue--> device
  {side::source, st::device, ev::complete, st::completed}, // device --complete--> completed
  {side::source, st::active, ev::complete, st::completed}, // active --complete--> completed
  {side::source, st::active, ev::start_postcopy,
   st::postcopy_active}, // active --postcopy--> postcopy-active
  {side::source, st::device, ev::start_postcopy,
   st::postcopy_active}, // device --postcopy--> postcopy-active
  {side::source, st::postcopy_active, ev::complete,
   st::completed}, // postcopy-active --complete--> completed
  {side::source, st::postcopy_active, ev::postcopy_broken,
   st::postcopy_paused}, // --broken--> paused
  {side::source, st::postcopy_paused, ev::recover,
   st::postcopy_recover}, // paused --recover--> recover
  {side::source, st::postcopy_recover, ev::recovered,
   st::postcopy_active}, // recover --ok--> postcopy-active
  {side::source, st::postcopy_recover, ev::recover_failed,
   st::postcopy_paused},                                      // recover --fail--> paused
  {side::source, st::active, ev::start_colo, st::colo},       // active --colo--> colo
  {side::source, st::device, ev::start_colo, st::colo},       // device --colo--> colo
  {side::source, st::colo, ev::colo_failover, st::completed}, // colo --failover--> completed
  // Cancel: every running state goes to cancelling, which ends cancelled.
  {side::source, st::setup, ev::cancel, st::cancelling},
  {side::source, st::wait_unplug, ev::cancel, st::cancelling},
  {side::source, st::active, ev::cancel, st::cancelling},
  {side::source, st::pre_switchover, ev::cancel, st::cancelling},
  {side::source, st::device, ev::cancel, st::cancelling},
  {side::source, st::postcopy_active, ev::cancel, st::cancelling},
  {side::source, st::postcopy_paused, ev::cancel, st::cancelling},
  {side::source, st::postcopy_recover, ev::cancel, st::cancelling},
  {side::source, st::cancelling, ev::cancel_done, st::cancelled}, // cancelling --done--> cancelled
  // Errors: any running state (not a cancel in progress) fails.
  {side::source, st::setup, ev::fail, st::failed},
  {side::source, st::wait_unplug, ev::fail, st::failed},
  {side::source, st::active, ev::fail, st::failed},
  {side::source, st::pre_switchover, ev::fail, st::failed},
  {side::source, st::device, ev::fail, st::failed},
  {side::source, st::postcopy_active, ev::fail, st::failed},
  // migrate_cancel while paused abandons the postcopy (the destination is
  // gone): failed, never cancelled — the guest ran elsewhere since the switch.
  {side::source, st::postcopy_paused, ev::fail, st::failed},
  {side::source, st::postcopy_recover, ev::fail, st::failed},
  {side::source, st::colo, ev::fail, st::failed},

  // The destination follows the stream; it has no cancelling: a cancelled
  // source shows up here as a failed stream.
  {side::destination, st::none, ev::start, st::setup},          // none --incoming--> setup
  {side::destination, st::setup, ev::setup_done, st::active},   // setup --stream--> active
  {side::destination, st::active, ev::complete, st::completed}, // active --complete--> completed
  {side::destination, st::active, ev::start_postcopy, st::postcopy_active},
  {side::destination, st::postcopy_active, ev::complete, st::completed},
  {side::destination, st::postcopy_active, ev::postcopy_broken, st::postcopy_paused},
  {side::destination, st::postcopy_paused, ev::recover, st::postcopy_recover},
  {side::destination, st::postcopy_recover, ev::recovered, st::postcopy_active},
  {side::destination, st::postcopy_recover, ev::recover_failed, st::postcopy_paused},
  {side::destination, st::active, ev::start_colo, st::colo},
  {side::destination, st::colo, ev::colo_failover, st::completed},
  {side::destination, st::setup, ev::fail, st::failed},
  {side::destination, st::active, ev::fail, st::failed},
  {side::destination, st::postcopy_active, ev::fail, st::failed},
  {side::destination, st::postcopy_recover, ev::fail, st::failed},
  {side::destination, st::colo, ev::fail, st::failed},
};

constexpr std::array<std::string_view, migration_status_count> status_names = {"none",
                                                                               "setup",
                                                                               "cancelling",
                                                                               "cancelled",
                                                                               "active",
                                                                               "postcopy-active",
                                                                               "postcopy-paused",
                                                                               "postcopy-recover",
                                                                               "completed",
                                                                               "failed",
                                                                               "colo",
                                                                               "pre-switchover",
                                                                               "device",
                                                                               "wait-unplug"};

constexpr std::array<std::string_view, migration_event_count> event_names = {"start",
                                                                             "setup-done",
                                                                             "wait-unplug",
                                                                             "unplug-done",
                                                                             "pause-switchover",
                                                                             "resume-switchover",
                                                                             "start-postcopy",
                                                                             "postcopy-broken",
                                                                             "recover",
                                                                             "recovered",
                                                                             "recover-failed",
                                                                             "start-colo",
                                                                             "colo-failover",
                                                                             "complete",
                                                                             "cancel",
                                                                             "cancel-done",
                                                                             "fail"};

} // namespace

std::string_view to_string(migration_status s) {
  return status_names.at(static_cast<size_t>(s));
}

std::string_view to_string(migration_event e) {
  return event_names.at(static_cast<size_t>(e));
}

caf::expected<migration_status> step(migration_side who, migration_status from,
                                     migration_event on) {
  for (const auto& e : table)
    if (e.who == who && e.from == from && e.on == on)
      return e.to;
  return make_ferry_error(errc::bad_run_state, "migration event '" + std::string{to_string(on)} +
                                                 "' does not apply in state '" +
                                                 std::string{to_string(from)} + "'");
}

bool migration_running(migration_status s) {
  switch (s) {
    case st::setup:
    case st::wait_unplug:
    case st::active:
    case st::pre_switchover:
    case st::device:
    case st::postcopy_active:
    case st::postcopy_paused:
    case st::postcopy_recover:
    case st::cancelling:
      return true;
    default:
      return false;
  }
}

} // namespace ferry
