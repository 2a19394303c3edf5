#include "agent/migration/migration_controller.hpp"

#include "common/error.hpp"
#include "protocol/qmp_wire.hpp"

#include <boost/json.hpp>

namespace ferry {

namespace json = boost::json;

migration_controller::migration_controller(guest& g, std::function<void(std::string)> emit)
  : guest_(g), emit_(std::move(emit)) {}

migration_controller::~migration_controller() {
  std::unique_ptr<migration_source> out;
  std::unique_ptr<migration_destination> in;
  {
    std::lock_guard lk{mtx_};
    out = std::move(out_);
    in = std::move(in_);
  }
  // Joined outside the lock: their threads may be inside a hook.
  out.reset();
  in.reset();
}

void migration_controller::expect_incoming(bool autostart) {
  std::lock_guard lk{mtx_};
  incoming_expected_ = true;
  autostart_ = autostart;
}

migration_status migration_controller::status(migration_side side) const {
  std::lock_guard lk{mtx_};
  return side == migration_side::source ? out_status_ : in_status_;
}

caf::expected<migration_status> migration_controller::step(migration_side side,
                                                           migration_event ev) {
  std::lock_guard lk{mtx_};
  return step_locked(side, ev);
}

caf::expected<migration_status> migration_controller::step_locked(migration_side side,
                                                                  migration_event ev) {
  auto& cur = side == migration_side::source ? out_status_ : in_status_;
  auto next = ferry::step(side, cur, ev);
  if (!next)
    return next;
  cur = *next;
  if (events_)
    emit_(qmp::event("MIGRATION", json::object{{"status", to_string(cur)}}));
  // The source's run state travels (QEMU): a guest that was paused there
  // stays paused here whatever -S said; a running one starts unless -S.
  // Postcopy starts it at the switch: its pages follow while it runs.
  const bool arrived =
    cur == migration_status::completed ||
    (cur == migration_status::postcopy_active && ev == migration_event::start_postcopy);
  if (side == migration_side::destination && arrived && autostart_ &&
      guest_.state() == run_state::prelaunch && (!in_ || in_->source_was_running())) {
    if (guest_.start())
      emit_(qmp::event("RESUME"));
  }
  // exit-on-error ends the process on a failed incoming migration, unless
  // the whole guest had arrived: then this paused copy may be the only one
  // (the source may have died handing over), so it stays for whoever
  // decides between the two.
  if (side == migration_side::destination && cur == migration_status::failed && exit_on_error_ &&
      on_exit_ && !(in_ && in_->holds_whole_guest()))
    on_exit_(1);
  return next;
}

bool migration_controller::settings_locked() const {
  std::lock_guard lk{mtx_};
  // An incoming migration still waiting for its source (setup) takes its
  // settings when the source connects, so they may change until then.
  return migration_running(out_status_) ||
         (migration_running(in_status_) && in_status_ != migration_status::setup);
}

bool migration_controller::outgoing_engine_running() const {
  std::lock_guard lk{mtx_};
  return out_ && migration_running(out_status_);
}

json::object migration_controller::info() const {
  std::lock_guard lk{mtx_};
  json::object info;
  if (out_status_ != migration_status::none) {
    info["status"] = to_string(out_status_);
    if (out_)
      out_->fill_info(out_status_, info);
  } else if (in_status_ != migration_status::none) {
    info["status"] = to_string(in_status_);
    if (in_)
      in_->fill_info(in_status_, info);
  }
  return info;
}

std::optional<std::string> migration_controller::run_state_name(run_state s) const {
  std::lock_guard lk{mtx_};
  if (s == run_state::prelaunch && incoming_expected_ && in_status_ == migration_status::completed)
    return "paused"; // arrived, not started (-S, or paused on the source)
  if (s == run_state::prelaunch && incoming_expected_ && in_status_ != migration_status::failed)
    return "inmigrate";
  if (s == run_state::paused && postmigrate_)
    return "postmigrate";
  // QEMU's run state for a guest COLO holds stopped: a fenced primary, or
  // one paused for a checkpoint.
  if (s == run_state::paused && out_status_ == migration_status::colo && out_ &&
      out_->colo_holds_guest())
    return "colo";
  // QEMU's name for the source from stop-and-copy (or the postcopy switch)
  // until the migration ends.
  if (s == run_state::paused &&
      (out_status_ == migration_status::pre_switchover || out_status_ == migration_status::device ||
       out_status_ == migration_status::postcopy_active ||
       out_status_ == migration_status::postcopy_paused ||
       out_status_ == migration_status::postcopy_recover))
    return "finish-migrate";
  return std::nullopt;
}

bool migration_controller::cont_defers_to_incoming(run_state s) {
  std::lock_guard lk{mtx_};
  postmigrate_ = {};
  if (s == run_state::prelaunch && incoming_expected_ &&
      in_status_ != migration_status::completed) {
    // QEMU: `cont` while a migration comes in means "start when it lands".
    autostart_ = true;
    return true;
  }
  return false;
}

migration_hooks migration_controller::hooks_for(migration_side side) {
  migration_hooks h;
  h.step = [this, side](migration_event ev) { return static_cast<bool>(step(side, ev)); };
  h.emit = emit_;
  h.threads = &threads_;
  h.keep_stopped = [this](guest::pause_guard& g) {
    std::lock_guard lk{mtx_};
    postmigrate_ = std::move(g);
  };
  h.colo_exit = [this, side](std::string_view reason) {
    std::lock_guard lk{mtx_};
    colo_last_mode_ = side == migration_side::source ? "primary" : "secondary";
    colo_reason_ = reason == "request" ? "request" : "error";
    emit_(
      qmp::event("COLO_EXIT", json::object{{"mode", colo_last_mode_}, {"reason", colo_reason_}}));
  };
  h.complete = [this, side](guest::pause_guard& g) {
    std::lock_guard lk{mtx_};
    if (!step_locked(side, migration_event::complete))
      return false;
    postmigrate_ = std::move(g);
    return true;
  };
  return h;
}

std::optional<std::string> migration_controller::outgoing_refusal() const {
  std::lock_guard lk{mtx_};
  return outgoing_refusal_locked();
}

std::optional<std::string> migration_controller::outgoing_refusal_locked() const {
  if (migration_running(out_status_))
    return "There's a migration process in progress";
  if (incoming_expected_ && in_status_ != migration_status::completed)
    return "Guest is waiting for an incoming migration";
  return std::nullopt;
}

std::optional<std::string> migration_controller::start_outgoing(outgoing_migration plan) {
  std::unique_ptr<migration_source> finished;
  {
    std::lock_guard lk{mtx_};
    if (auto why = outgoing_refusal_locked())
      return why;
    finished = std::move(out_);
  }
  // Joined outside the lock: its thread may still be returning from a hook.
  finished.reset();
  std::lock_guard lk{mtx_};
  postmigrate_ = {};
  if (auto ok = step_locked(migration_side::source, migration_event::start); !ok)
    return describe(ok.error());
  out_ =
    std::make_unique<migration_source>(guest_, std::move(plan), hooks_for(migration_side::source));
  return std::nullopt;
}

std::optional<std::string> migration_controller::incoming_refusal() const {
  std::lock_guard lk{mtx_};
  return incoming_refusal_locked();
}

std::optional<std::string> migration_controller::incoming_refusal_locked() const {
  if (!incoming_expected_)
    return "'-incoming' was not specified on the command line";
  if (in_status_ != migration_status::none)
    return "The incoming migration has already been started";
  return std::nullopt;
}

std::optional<std::string> migration_controller::start_incoming(incoming_migration plan,
                                                                std::optional<bool> exit_on_error) {
  std::lock_guard lk{mtx_};
  if (auto why = incoming_refusal_locked())
    return why;
  if (exit_on_error)
    exit_on_error_ = *exit_on_error;
  if (auto ok = step_locked(migration_side::destination, migration_event::start); !ok)
    return describe(ok.error());
  auto d =
    migration_destination::listen(guest_, std::move(plan), hooks_for(migration_side::destination));
  if (!d) {
    in_status_ = migration_status::none;
    return describe(d.error());
  }
  in_ = std::move(*d);
  return std::nullopt;
}

std::optional<std::string> migration_controller::cancel() {
  // Cancelling when nothing runs does nothing, and says nothing (QEMU): a
  // completed migration stays completed, a failed one failed.
  std::lock_guard lk{mtx_};
  const auto in_postcopy = [](migration_status st) {
    return st == migration_status::postcopy_active || st == migration_status::postcopy_paused ||
           st == migration_status::postcopy_recover;
  };
  if (in_postcopy(in_status_))
    return "Postcopy migration cannot be cancelled: the guest runs here and waits for pages "
           "only the source holds";
  if (!migration_running(out_status_) && migration_running(in_status_)) {
    // On the destination it fences: decided under this lock, so either
    // the source's go already completed the migration (the guest is here)
    // or the guest will never start from it.
    if (in_)
      in_->cancel("migrate_cancel on the destination: the guest will not start here");
    if (auto ok = step_locked(migration_side::destination, migration_event::fail); !ok)
      return describe(ok.error());
    return std::nullopt;
  }
  if (!migration_running(out_status_) || out_status_ == migration_status::cancelling)
    return std::nullopt;
  if (out_status_ == migration_status::colo)
    return "The guest is protected by COLO: x-colo-lost-heartbeat ends COLO on this side";
  // As libvirt: once the guest runs on the destination, a cancel would
  // lose it (this side's copy is stale).
  // Paused, the destination may be gone for good (killed): cancel abandons
  // the postcopy, the migration fails and this stale copy stays stopped.
  if (out_status_ == migration_status::postcopy_paused && out_) {
    out_->cancel();
    return std::nullopt;
  }
  if (in_postcopy(out_status_))
    return "Postcopy migration cannot be cancelled: the guest runs on the destination "
           "(migrate-pause pauses it)";
  if (auto ok = step_locked(migration_side::source, migration_event::cancel); !ok)
    return describe(ok.error());
  if (out_)
    out_->cancel();
  else // no engine behind the state (tests stepping by hand)
    step_locked(migration_side::source, migration_event::cancel_done);
  return std::nullopt;
}

std::optional<std::string> migration_controller::resume_switchover(const std::string& expected) {
  std::lock_guard lk{mtx_};
  if (to_string(out_status_) != expected)
    return "Migration not in expected state: " + std::string{to_string(out_status_)};
  if (auto ok = step_locked(migration_side::source, migration_event::resume_switchover); !ok)
    return describe(ok.error());
  if (out_)
    out_->resume_switchover();
  return std::nullopt;
}

std::optional<std::string> migration_controller::pause_postcopy() {
  std::lock_guard lk{mtx_};
  // The engine cuts its link as a failure would and steps to
  // postcopy-paused itself (without one, tests stepping by hand).
  if (out_status_ == migration_status::postcopy_active) {
    if (!out_)
      return step_locked(migration_side::source, migration_event::postcopy_broken)
               ? std::nullopt
               : std::optional<std::string>{"refused"};
    out_->pause_postcopy();
    return std::nullopt;
  }
  if (in_status_ == migration_status::postcopy_active && in_) {
    in_->pause_postcopy();
    return std::nullopt;
  }
  return "migrate-pause is currently only supported during postcopy-active state";
}

std::optional<std::string> migration_controller::recover_incoming(const migration_address& at) {
  std::lock_guard lk{mtx_};
  if (in_status_ != migration_status::postcopy_paused || !in_)
    return "Migrate recover can only be run when postcopy is paused.";
  if (!at.bidirectional())
    return "postcopy recovery needs a socket transport (tcp: or unix:), not " + at.describe();
  auto l = migration_listener::create(at);
  if (!l)
    return describe(l.error());
  if (auto ok = step_locked(migration_side::destination, migration_event::recover); !ok)
    return describe(ok.error());
  in_->recover(std::move(*l));
  return std::nullopt;
}

std::optional<std::string> migration_controller::resume_outgoing(const migration_address& to,
                                                                 std::shared_ptr<tls_context> tls) {
  std::lock_guard lk{mtx_};
  if (out_status_ != migration_status::postcopy_paused || !out_)
    return "Cannot resume if there is no paused migration";
  if (!to.bidirectional())
    return "postcopy recovery needs a socket transport (tcp: or unix:), not " + to.describe();
  if (auto ok = step_locked(migration_side::source, migration_event::recover); !ok)
    return describe(ok.error());
  out_->resume_postcopy(to, std::move(tls));
  return std::nullopt;
}

std::optional<std::string> migration_controller::start_postcopy() {
  std::lock_guard lk{mtx_};
  if (out_status_ == migration_status::none)
    return "Postcopy must be started after migration has been started";
  if (!out_) { // no engine behind the state (tests stepping by hand)
    if (auto ok = step_locked(migration_side::source, migration_event::start_postcopy); !ok)
      return describe(ok.error());
    return std::nullopt;
  }
  if (out_status_ != migration_status::active)
    return "Postcopy can only start while the migration is active (it is " +
           std::string{to_string(out_status_)} + ")";
  // The engine switches at the end of the pass under way; the status
  // follows then.
  out_->start_postcopy();
  return std::nullopt;
}

void migration_controller::tune(const migration_source::live_parameters& p) {
  std::lock_guard lk{mtx_};
  if (out_ && migration_running(out_status_))
    out_->set_parameters(p);
}

migration_controller::colo_status_info migration_controller::colo_status() const {
  std::lock_guard lk{mtx_};
  colo_status_info info;
  if (out_status_ == migration_status::colo)
    info.mode = "primary";
  else if (in_status_ == migration_status::colo)
    info.mode = "secondary";
  // While COLO runs, last-mode repeats mode (QEMU).
  info.last_mode = info.mode != "none" ? info.mode : colo_last_mode_;
  info.reason = colo_reason_;
  return info;
}

std::optional<std::string> migration_controller::colo_lost_heartbeat() {
  migration_destination* in = nullptr;
  {
    std::lock_guard lk{mtx_};
    if (out_status_ == migration_status::colo && out_) {
      out_->colo_lost_heartbeat();
      return std::nullopt;
    }
    if (in_status_ != migration_status::colo || !in_)
      return "VM is not in COLO mode";
    in = in_.get();
  }
  // Outside the lock: the secondary waits a moment for its COLO thread to
  // take it, and that thread reports through hooks that take the lock. Only
  // the QMP thread, this one, replaces in_.
  in->colo_lost_heartbeat();
  return std::nullopt;
}

} // namespace ferry
