#pragma once
// The phases the two migration engines walk, each side as an enum and one
// transition table (QEMU's phases: setup, iterate, switchover, device state,
// completion; with the failure and cancel edges). The engine's own thread is
// the only one that steps its phase; the owner's MigrationStatus machine
// (migration_state) is what QMP shows. COLO adds phases here.

#include <caf/expected.hpp>

#include <cstdint>
#include <string_view>

namespace ferry {

enum class source_phase : uint8_t {
  connect,      // channels open, handshake
  setup,        // dirty tracking starts
  iterate,      // passes over the dirty log
  switchover,   // guest stopped, last dirty pages, channels drained
  device_state, // CPU and device state, end of stream
  handover,     // the destination loaded everything; go
  // postcopy-ram, after migrate-start-postcopy: the guest stops, what the
  // destination lacks is named (discard), CPU and device state go, and the
  // destination runs the guest once it answers ready and hears go.
  postcopy_switch,
  postcopy, // the rest of the pages, requested ones first
  // The link failed (or migrate-pause cut it) after go: the guest runs on
  // the destination, this side keeps the pages it still owes and waits for
  // `migrate resume=true`.
  postcopy_paused,
  postcopy_recover, // new channel, same session: what arrived is reconciled
  // x-colo: the secondary holds the whole guest; the guest runs here and
  // is checkpointed to it every x-checkpoint-delay ms.
  colo,
  done,
  failed,
  cancelled,
};
inline constexpr size_t source_phase_count = 14;

enum class source_event : uint8_t {
  connected,           // the destination agreed to the handshake
  setup_done,          // tracking on; the first pass may begin
  pass_again,          // a pass ended with more dirty than the downtime allows
  pass_converged,      // a pass ended with the rest within downtime-limit
  dirty_sent,          // the last dirty pages are on the wire, senders drained
  state_sent,          // CPU and device state and the end record went
  destination_ready,   // the destination answered ready, the owner took over
  postcopy_requested,  // a pass ended after migrate-start-postcopy
  destination_running, // postcopy: the destination took the guest (go sent)
  postcopy_done,       // postcopy: every page is placed on the destination
  link_lost,           // postcopy: the channel failed after go (or migrate-pause)
  resume,              // postcopy: migrate resume=true named where to reconnect
  recovered,           // postcopy: the destination took the resume; pages flow again
  colo_started,        // x-colo: the secondary loaded the first copy and is ready
  colo_ended,          // COLO over (the secondary lost, or x-colo-lost-heartbeat): runs alone
  error,               // a failure: the source keeps its guest (in postcopy: stays stopped)
  cancel,              // migrate_cancel
};
inline constexpr size_t source_event_count = 17;

enum class destination_phase : uint8_t {
  listen,     // waiting for the source's main channel
  handshake,  // hello checked against this guest, answered
  channels,   // multifd channels accepted and checked
  receive,    // pages until the end record
  load_state, // CPU and device state applied
  handover,   // ready sent; waiting for go
  // postcopy: state loaded and the digest of what arrived so far checked,
  // the pages still to come made absent and watched (userfaultfd); ready
  // sent, waiting for go.
  postcopy_load,
  postcopy, // the guest runs here; its missing pages are asked for and placed
  // The link failed after go: the guest runs on, a thread touching a
  // missing page waits; migrate-recover names where the source may return.
  postcopy_paused,
  postcopy_recover, // the source's resume checked, what arrived told to it
  // x-colo: the guest is held here as the last whole checkpoint, not run;
  // checkpoints are staged and committed until the primary is lost.
  colo,
  done,
  failed,
};
inline constexpr size_t destination_phase_count = 13;

enum class destination_event : uint8_t {
  accepted,        // the main channel connected
  agreed,          // the hello matched this guest
  channels_up,     // every multifd channel is receiving (or there are none)
  stream_ended,    // the end record arrived, every channel drained
  state_loaded,    // the CPU state went into the guest
  go,              // the source let the guest run here
  postcopy_switch, // postcopy-run arrived after the state: switch to postcopy
  postcopy_done,   // every page the source still owed is placed
  link_lost,       // postcopy: the channel failed after go (or migrate-pause)
  recover,         // postcopy: migrate-recover gave a new address
  recovered,       // postcopy: the source resumed; pages flow again
  colo_started,    // x-colo: the first copy loaded, checkpoint-ready sent
  colo_ended,      // the primary lost (or x-colo-lost-heartbeat): failover, the guest runs here
  error,           // malformed stream, refused handshake, lost channel
  cancel,          // the owner stopped the incoming migration
};
inline constexpr size_t destination_event_count = 15;

std::string_view to_string(source_phase p);
std::string_view to_string(source_event e);
std::string_view to_string(destination_phase p);
std::string_view to_string(destination_event e);

bool terminal(source_phase p);
bool terminal(destination_phase p);

// The next phase, or an error naming the refused edge (the phase stays).
caf::expected<source_phase> step(source_phase from, source_event on);
caf::expected<destination_phase> step(destination_phase from, destination_event on);

} // namespace ferry
