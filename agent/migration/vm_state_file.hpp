#pragma once
// A guest's whole state — RAM, vCPUs, devices — as a Ferry migration stream
// in a file: what a VM snapshot stores (snapshot-save) and loads back
// (snapshot-load). The migration engines do the work on their own threads,
// outside the migration controller: query-migrate never shows it, as
// QEMU's savevm/loadvm do not.

#include "agent/migration/thread_registry.hpp"
#include "agent/vmm/guest.hpp"

#include <caf/expected.hpp>

namespace ferry {

// Writes the state of `g` into `fd` (from offset 0, truncating). The caller
// holds the guest paused.
caf::expected<void> save_vm_state(guest& g, int fd, thread_registry* threads);
// Loads the state in `fd` into `g` (paused, or never started); every page
// is written, zero pages included, unless the guest's RAM is fresh.
caf::expected<void> load_vm_state(guest& g, int fd, thread_registry* threads);

} // namespace ferry
