#pragma once
// How the orchestrator runs migrations: limits and the parameters it sets on
// every migration (orchestrator.toml [policy]; defaults as the issue states).

#include <cstdint>

namespace ferry {

struct migration_policy {
  uint32_t max_migrations = 5; // cluster-wide at once
  uint32_t max_outbound_per_host = 2;
  uint32_t max_inbound_per_host = 2;
  uint64_t max_bandwidth = 134217728; // bytes/s per migration (QEMU's default)
  uint64_t downtime_limit_ms = 300;
  uint32_t multifd_channels = 2; // 0: one stream
  // Every channel of a migration runs TLS 1.3 with the hosts' certificates;
  // the target admits only the source host (docs/security.md). Off sends
  // guest memory in clear: for a network nobody else can see.
  bool migration_tls = true;
  uint32_t progress_timeout_s = 60; // no progress for this long: cancel
  uint32_t completion_timeout_s_per_gib = 120;
  // After the source completed: how long the target has to report its
  // incoming migration completed before it is fenced and judged.
  uint32_t handover_timeout_ms = 10'000;
  uint32_t evacuation_attempts = 3; // hosts tried per guest
  // Moves not yet started off a host whose link went down wait this long
  // for it to come back (an agent restart leaves its guests running) before
  // they are cancelled.
  uint32_t source_return_s = 30;
  // The escalation ladder for a migration that does not converge: after
  // every `escalate_after_passes` dirty-log passes without completing, the
  // next step: `downtime_steps` times double downtime-limit, then let
  // auto-converge throttle (if `auto_converge_step`), then hold every vCPU
  // of the source to `dirty_limit_mib_s` with set-vcpu-dirty-limit (if
  // `dirty_limit_step`; guests with a KVM dirty ring), then cancel.
  uint32_t escalate_after_passes = 6;
  uint32_t downtime_steps = 2;
  bool auto_converge_step = true;
  bool dirty_limit_step = true;
  uint64_t dirty_limit_mib_s = 1; // QEMU's vcpu-dirty-limit default
  // The last rung before cancel (off by default): migrate-start-postcopy.
  // The guest then runs on the target while its remaining pages follow, so
  // it always arrives — but from the switch until the end a failure of the
  // target host loses it (QEMU's postcopy; docs/orchestrator.md). Allowing
  // it sets postcopy-ram (with postcopy-preempt if `postcopy_preempt`) on
  // both sides from the start, as capabilities cannot change mid-migration.
  bool postcopy_step = false;
  bool postcopy_preempt = true;
  uint64_t max_postcopy_bandwidth = 0; // bytes/s once in postcopy; 0: unlimited (QEMU)
  // A broken postcopy link pauses both sides; the job recovers it
  // (migrate-recover, resume) after 1 s, then backs off doubling up to this.
  uint32_t postcopy_recover_backoff_max_s = 30;
  // A move waiting for its slot, next in line, gets both sides ready ahead
  // (target guest created and listening, source configured), so it starts
  // migrating the moment the slot is free. Costs a listening target guest
  // (its RAM) per waiting move, at most as many as may run at once.
  bool prepare_ahead = true;
};

} // namespace ferry
