#pragma once
// The one owner of a guest's migrations: both statuses (outgoing and
// incoming), the engines that run them and the hooks through which those
// engines report. It is the only writer of the status; the QMP monitor
// checks a command's arguments and settings, builds the plan and hands it
// over.
//
// Locking: the controller's mutex guards the statuses and engines and is
// never held while calling out, except to emit events. A caller may hold its
// own lock (the monitor's settings) while calling in; the controller never
// calls back into its caller.

#include "agent/migration/migration_destination.hpp"
#include "agent/migration/migration_source.hpp"
#include "agent/migration/migration_state.hpp"
#include "agent/migration/thread_registry.hpp"
#include "agent/vmm/guest.hpp"

#include <boost/json/object.hpp>

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

namespace ferry {

class migration_controller {
public:
  // `emit` sends an event line to every QMP client.
  migration_controller(guest& g, std::function<void(std::string)> emit);
  // Stops the engines first: their threads call back into the controller.
  ~migration_controller();
  migration_controller(const migration_controller&) = delete;
  migration_controller& operator=(const migration_controller&) = delete;

  // Called with an exit status when the process must end (a failed
  // incoming migration with exit-on-error).
  void set_exit_handler(std::function<void(int)> on_exit) { on_exit_ = std::move(on_exit); }
  // The `events` capability: each status change raises a MIGRATION event.
  void set_events(bool on) { events_ = on; }
  // The agent was started with -incoming: the guest waits for a migration
  // and starts when it lands, unless -S.
  void expect_incoming(bool autostart);

  migration_status status(migration_side side) const;
  // The state machine steps (or refuses); tests step it by hand too.
  caf::expected<migration_status> step(migration_side side, migration_event ev);
  // Whether a migration under way freezes capabilities and parameters.
  bool settings_locked() const;
  // An outgoing engine is at work (it reads the dirty log, owns the limit).
  bool outgoing_engine_running() const;
  // query-migrate: the outgoing migration once there is one, else the
  // incoming one; before any, an empty MigrationInfo (as QEMU).
  boost::json::object info() const;
  // What query-status calls a guest in run state `s` around a migration
  // (inmigrate, postmigrate, finish-migrate), if anything.
  std::optional<std::string> run_state_name(run_state s) const;
  // `cont`: the source's postmigrate pause ends; a guest waiting for its
  // incoming migration starts when it lands instead (true: nothing to do now).
  bool cont_defers_to_incoming(run_state s);

  // Why no outgoing migration can start now, if so.
  std::optional<std::string> outgoing_refusal() const;
  // Starts `plan` (the previous, finished engine is joined first). An error
  // text, or nothing.
  std::optional<std::string> start_outgoing(outgoing_migration plan);
  // Why no incoming migration can start now, if so.
  std::optional<std::string> incoming_refusal() const;
  std::optional<std::string> start_incoming(incoming_migration plan,
                                            std::optional<bool> exit_on_error);
  // QMP's migrate_cancel, migrate-continue, migrate-pause and
  // migrate-start-postcopy on the outgoing side.
  std::optional<std::string> cancel();
  std::optional<std::string> resume_switchover(const std::string& expected_state);
  std::optional<std::string> pause_postcopy();
  std::optional<std::string> start_postcopy();
  // migrate-recover (destination) and migrate resume=true (source): a
  // paused postcopy goes on over a new connection.
  std::optional<std::string> recover_incoming(const migration_address& at);
  std::optional<std::string> resume_outgoing(const migration_address& to,
                                             std::shared_ptr<tls_context> tls);
  // A running source takes new limits at once.
  void tune(const migration_source::live_parameters& p);
  // query-colo-status: the COLO mode now (from the migration's status), the
  // mode the last COLO exit left and why (COLOExitReason).
  struct colo_status_info {
    std::string_view mode = "none";
    std::string_view last_mode = "none";
    std::string_view reason = "none";
  };
  colo_status_info colo_status() const;
  // x-colo-lost-heartbeat: this side ends COLO — a secondary takes over from
  // its last checkpoint, a primary goes on alone. An error text when this
  // side is in no COLO pair.
  std::optional<std::string> colo_lost_heartbeat();

  thread_registry& threads() { return threads_; }

private:
  // With mtx_ held.
  caf::expected<migration_status> step_locked(migration_side side, migration_event ev);
  std::optional<std::string> outgoing_refusal_locked() const;
  std::optional<std::string> incoming_refusal_locked() const;
  migration_hooks hooks_for(migration_side side);

  guest& guest_;
  std::function<void(std::string)> emit_;
  std::function<void(int)> on_exit_;
  std::atomic<bool> events_{false};

  mutable std::mutex mtx_;
  migration_status out_status_ = migration_status::none;
  migration_status in_status_ = migration_status::none;
  bool incoming_expected_ = false;
  bool autostart_ = true;
  bool exit_on_error_ = true;
  guest::pause_guard postmigrate_; // the source guest after a completed migration
  std::string_view colo_last_mode_ = "none";
  std::string_view colo_reason_ = "none";
  thread_registry threads_;
  std::unique_ptr<migration_source> out_;
  std::unique_ptr<migration_destination> in_;
};

} // namespace ferry
