#include "agent/migration/engine_phase.hpp"

#include "common/error.hpp"

#include <array>
#include <string>

namespace ferry {

namespace {

using sp = source_phase;
using se = source_event;
using dp = destination_phase;
using de = destination_event;

constexpr std::array<std::string_view, source_phase_count> source_phase_names = {
  "connect",         "setup",    "iterate",         "switchover",       "device-state", "handover",
  "postcopy-switch", "postcopy", "postcopy-paused", "postcopy-recover", "colo",         "done",
  "failed",          "cancelled"};
constexpr std::array<std::string_view, source_event_count> source_event_names = {
  "connected",
  "setup-done",
  "pass-again",
  "pass-converged",
  "dirty-sent",
  "state-sent",
  "destination-ready",
  "postcopy-requested",
  "destination-running",
  "postcopy-done",
  "link-lost",
  "resume",
  "recovered",
  "colo-started",
  "colo-ended",
  "error",
  "cancel"};
constexpr std::array<std::string_view, destination_phase_count> destination_phase_names = {
  "listen",   "handshake",     "channels", "receive",         "load-state",
  "handover", "postcopy-load", "postcopy", "postcopy-paused", "postcopy-recover",
  "colo",     "done",          "failed"};
constexpr std::array<std::string_view, destination_event_count> destination_event_names = {
  "accepted",  "agreed",          "channels-up",   "stream-ended", "state-loaded",
  "go",        "postcopy-switch", "postcopy-done", "link-lost",    "recover",
  "recovered", "colo-started",    "colo-ended",    "error",        "cancel"};

template <class Phase, class Event>
caf::error refused(Phase from, Event on) {
  return make_ferry_error(errc::bad_run_state, "engine event '" + std::string{to_string(on)} +
                                                 "' does not apply in phase '" +
                                                 std::string{to_string(from)} + "'");
}

} // namespace

std::string_view to_string(source_phase p) {
  return source_phase_names.at(static_cast<size_t>(p));
}
std::string_view to_string(source_event e) {
  return source_event_names.at(static_cast<size_t>(e));
}
std::string_view to_string(destination_phase p) {
  return destination_phase_names.at(static_cast<size_t>(p));
}
std::string_view to_string(destination_event e) {
  return destination_event_names.at(static_cast<size_t>(e));
}

bool terminal(source_phase p) {
  return p == sp::done || p == sp::failed || p == sp::cancelled;
}

bool terminal(destination_phase p) {
  return p == dp::done || p == dp::failed;
}

caf::expected<source_phase> step(source_phase from, source_event on) {
  if (terminal(from))
    return refused(from, on);
  // Abort edges first: any live phase may fail or be cancelled.
  if (on == se::error)
    return sp::failed; // live --error--> failed
  if (on == se::cancel)
    return sp::cancelled; // live --cancel--> cancelled
  switch (from) {
    case sp::connect:
      if (on == se::connected)
        return sp::setup; // connect --connected--> setup
      break;
    case sp::setup:
      if (on == se::setup_done)
        return sp::iterate; // setup --setup-done--> iterate
      break;
    case sp::iterate:
      if (on == se::pass_again)
        return sp::iterate; // iterate --pass-again--> iterate
      if (on == se::pass_converged)
        return sp::switchover; // iterate --pass-converged--> switchover
      if (on == se::postcopy_requested)
        return sp::postcopy_switch; // iterate --postcopy-requested--> postcopy-switch
      break;
    case sp::switchover:
      if (on == se::dirty_sent)
        return sp::device_state; // switchover --dirty-sent--> device-state
      break;
    case sp::device_state:
      if (on == se::state_sent)
        return sp::handover; // device-state --state-sent--> handover
      break;
    case sp::handover:
      if (on == se::destination_ready)
        return sp::done; // handover --destination-ready--> done
      if (on == se::colo_started)
        return sp::colo; // handover --colo-started--> colo
      break;
    case sp::colo:
      if (on == se::colo_ended)
        return sp::done; // colo --colo-ended--> done (the guest runs on here)
      break;
    case sp::postcopy_switch:
      if (on == se::destination_running)
        return sp::postcopy; // postcopy-switch --destination-running--> postcopy
      if (on == se::link_lost)
        return sp::postcopy_paused; // (go went out, then the link failed)
      break;
    case sp::postcopy:
      if (on == se::postcopy_done)
        return sp::done; // postcopy --postcopy-done--> done
      if (on == se::link_lost)
        return sp::postcopy_paused; // postcopy --link-lost--> postcopy-paused
      break;
    case sp::postcopy_paused:
      if (on == se::resume)
        return sp::postcopy_recover; // postcopy-paused --resume--> postcopy-recover
      break;
    case sp::postcopy_recover:
      if (on == se::recovered)
        return sp::postcopy; // postcopy-recover --recovered--> postcopy
      if (on == se::link_lost)
        return sp::postcopy_paused; // postcopy-recover --link-lost--> postcopy-paused
      break;
    default:
      break;
  }
  return refused(from, on);
}

caf::expected<destination_phase> step(destination_phase from, destination_event on) {
  if (terminal(from))
    return refused(from, on);
  // The destination never keeps a half-loaded guest: error and cancel both
  // end in failed.
  if (on == de::error || on == de::cancel)
    return dp::failed; // live --error|cancel--> failed
  switch (from) {
    case dp::listen:
      if (on == de::accepted)
        return dp::handshake; // listen --accepted--> handshake
      break;
    case dp::handshake:
      if (on == de::agreed)
        return dp::channels; // handshake --agreed--> channels
      break;
    case dp::channels:
      if (on == de::channels_up)
        return dp::receive; // channels --channels-up--> receive
      break;
    case dp::receive:
      if (on == de::stream_ended)
        return dp::load_state; // receive --stream-ended--> load-state
      if (on == de::postcopy_switch)
        return dp::postcopy_load; // receive --postcopy-switch--> postcopy-load
      break;
    case dp::load_state:
      if (on == de::state_loaded)
        return dp::handover; // load-state --state-loaded--> handover
      if (on == de::colo_started)
        return dp::colo; // load-state --colo-started--> colo
      break;
    case dp::colo:
      if (on == de::colo_ended)
        return dp::done; // colo --colo-ended--> done (failover: the guest runs here)
      break;
    case dp::handover:
      if (on == de::go)
        return dp::done; // handover --go--> done
      break;
    case dp::postcopy_load:
      if (on == de::go)
        return dp::postcopy; // postcopy-load --go--> postcopy
      break;
    case dp::postcopy:
      if (on == de::postcopy_done)
        return dp::done; // postcopy --postcopy-done--> done
      if (on == de::link_lost)
        return dp::postcopy_paused; // postcopy --link-lost--> postcopy-paused
      break;
    case dp::postcopy_paused:
      if (on == de::recover)
        return dp::postcopy_recover; // postcopy-paused --recover--> postcopy-recover
      break;
    case dp::postcopy_recover:
      if (on == de::recovered)
        return dp::postcopy; // postcopy-recover --recovered--> postcopy
      if (on == de::link_lost)
        return dp::postcopy_paused; // postcopy-recover --link-lost--> postcopy-paused
      break;
    default:
      break;
  }
  return refused(from, on);
}

} // namespace ferry
