#pragma once
// The outgoing side of a precopy migration, on its own thread ("mig-source"):
// connect, handshake, first pass over all RAM, passes over the dirty log
// until the expected downtime fits downtime-limit, then stop the guest, send
// the rest and the CPU state, and hand the guest over. Sending threads
// (page_sender) do the page I/O; this thread only decides what to send.
//
// The engine reports to its owner (the QMP monitor) through hooks: state
// machine steps, events, and the paused guest it leaves behind on success.

#include "agent/migration/engine_phase.hpp"
#include "agent/migration/migration_state.hpp"
#include "agent/migration/thread_registry.hpp"
#include "agent/transport/migration_address.hpp"
#include "agent/transport/migration_channel.hpp"
#include "agent/transport/migration_tls.hpp"
#include "agent/vmm/guest.hpp"
#include "protocol/page_compression.hpp"

#include <boost/json/object.hpp>

#include <array>
#include <functional>
#include <memory>
#include <string>

namespace ferry {

class vcpu_dirty_limit;

struct outgoing_migration {
  migration_address target;
  bool multifd = false;
  uint32_t channels = 2; // multifd-channels
  bool detect_zero = true;
  bool zero_copy = false; // zero-copy-send: multifd pages leave straight from guest RAM
  mig::compression compress = mig::compression::none; // with multifd only
  int compress_level = 1;
  std::shared_ptr<tls_context> tls; // every channel runs TLS when set
  bool xbzrle = false;              // without multifd only
  uint64_t xbzrle_cache_size = 64u << 20;
  // auto-converge and its parameters.
  bool auto_converge = false;
  unsigned throttle_trigger_threshold = 50;
  unsigned cpu_throttle_initial = 20;
  unsigned cpu_throttle_increment = 10;
  bool cpu_throttle_tailslow = false;
  unsigned max_cpu_throttle = 99;
  // dirty-limit: the guest's vCPU dirty limit (set when the capability is
  // on), vcpu-dirty-limit (MiB/s) and x-vcpu-dirty-limit-period (ms).
  std::shared_ptr<vcpu_dirty_limit> dirty_limit;
  uint64_t dirty_limit_quota = 1;
  uint64_t dirty_limit_period_ms = 1000;
  bool validate_uuid = false;
  // postcopy-ram: migrate-start-postcopy may switch the migration to
  // postcopy (needs a socket transport: the destination asks for pages).
  bool postcopy = false;
  bool preempt = false;     // postcopy-preempt: requested pages on a channel of their own
  bool release_ram = false; // release-ram: pages the destination holds are freed here
  uint64_t max_postcopy_bandwidth = 0; // bytes/s, 0 = unlimited
  bool switchover_ack = false;         // wait for the destination's word to switch over
  // x-colo: the destination becomes the COLO secondary; the guest runs on
  // here, checkpointed every x-checkpoint-delay ms.
  bool colo = false;
  uint64_t checkpoint_delay_ms = 20000;
  // A secondary silent this long (ms) fences the guest: paused until
  // x-colo-lost-heartbeat. 0: never.
  uint64_t colo_fence_ms = 0;
  // Output commit by comparison (QEMU's colo-compare): the secondary runs
  // too and output both copies agree on goes out at once; else the
  // primary's is held until a checkpoint covers it.
  bool colo_compare = false;
  // x-ignore-shared with guest RAM in a shared file: no page is sent, the
  // destination maps the same file (a shared-ram record checks it does).
  bool ignore_shared = false;
  // mode cpr-reboot: the guest stops before anything is saved.
  bool stop_first = false;
  // background-snapshot: the guest runs on while its RAM as it was at the
  // start is saved (write-protect faults save a page before its first
  // write); it keeps running after completion.
  bool background_snapshot = false;
  // mapped-ram (a file: target): every page at its offset in the file,
  // rewritten in place when dirty again, by `mapped_threads` threads.
  bool mapped_ram = false;
  uint32_t mapped_threads = 1;
  bool pause_before_switchover = false;
  bool events = false;
  std::array<uint8_t, 16> uuid{};
  uint64_t max_bandwidth = 0; // bytes/s, 0 = unlimited
  uint64_t downtime_limit_ms = 300;
  uint64_t avail_switchover_bandwidth = 0; // bytes/s, 0 = measure
  // Opens each channel; empty = open_outgoing(target) (tests: loopback).
  channel_opener open;
};

struct migration_hooks {
  // Steps the owner's state machine; false when the step was refused.
  std::function<bool(migration_event)> step;
  std::function<void(std::string)> emit; // a QMP event line
  // Postcopy's source: its guest now belongs to the destination, so its
  // stopped copy must never run again on its own; the owner keeps the
  // guard (as after completion) whatever becomes of the migration.
  std::function<void(guest::pause_guard&)> keep_stopped;
  // Steps to completed and, in the same breath, takes the stopped guest's
  // guard: it stays stopped until the owner lets it run again (`cont`), and
  // nobody sees "completed" with the guest not yet in postmigrate. False
  // (guard untouched) when the step was refused (a cancel won the race).
  std::function<bool(guest::pause_guard&)> complete;
  // COLO ended on this side (COLO_EXIT): `reason` is QEMU's COLOExitReason
  // ("request": x-colo-lost-heartbeat or the peer's; "error": the peer or
  // the link lost, a malformed checkpoint).
  std::function<void(std::string_view reason)> colo_exit;
  // Where the engine's threads register (query-migrationthreads).
  thread_registry* threads = nullptr;
};

class migration_source {
public:
  migration_source(guest& g, outgoing_migration plan, migration_hooks hooks);
  ~migration_source(); // cancels if still running, joins
  migration_source(const migration_source&) = delete;
  migration_source& operator=(const migration_source&) = delete;

  void cancel();
  // Where the engine is (engine_phase).
  source_phase phase() const;
  // migrate-continue from pre-switchover.
  void resume_switchover();
  // migrate-start-postcopy: the pass under way is the last one; then the
  // guest moves and its remaining pages follow.
  void start_postcopy();
  // migrate-pause: the postcopy link is cut as if it had failed.
  void pause_postcopy();
  // x-colo-lost-heartbeat on the primary: COLO ends, the guest runs on here
  // alone (the secondary is told, so it does not take over as well).
  void colo_lost_heartbeat();
  // A COLO primary holding its guest paused: fenced because its secondary
  // went silent, or for a checkpoint (query-status shows QEMU's run state
  // "colo" then, not "paused").
  bool colo_holds_guest() const;
  // migrate resume=true: a paused postcopy reconnects to `target`.
  void resume_postcopy(migration_address target, std::shared_ptr<tls_context> tls);
  // Parameters QEMU lets change during a migration; a new cache size takes
  // effect from the next pass.
  struct live_parameters {
    uint64_t max_bandwidth = 0;
    uint64_t downtime_limit_ms = 300;
    uint64_t avail_switchover_bandwidth = 0;
    uint64_t xbzrle_cache_size = 64u << 20;
    uint64_t dirty_limit_quota = 1;
    uint64_t dirty_limit_period_ms = 1000;
  };
  void set_parameters(const live_parameters& p);

  // MigrationInfo members besides status, for the given status.
  void fill_info(migration_status s, boost::json::object& info) const;

  struct impl;

private:
  std::unique_ptr<impl> impl_;
};

} // namespace ferry
