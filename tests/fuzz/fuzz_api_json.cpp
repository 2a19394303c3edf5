// libFuzzer: the guest spec an API client posts (untrusted JSON). Bad input
// must become an error, never a crash; and a spec the agent accepts must
// reach the guest's command line unchanged: no path or name can smuggle
// QEMU options (",share=off", ",format=...") into the line the agent builds.

#include "agent/cli/vm_config.hpp"
#include "agent/daemon/guest_process.hpp"
#include "orchestrator/guest_spec_json.hpp"

#include <cstdlib>
#include <string>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto spec = ferry::guest_spec_from_json(text);
  if (!spec || !ferry::check_guest_spec(*spec))
    return 0;
  auto cfg = ferry::parse_vm_args(ferry::vm_arguments(*spec, "/run/ferry"));
  if (!cfg)
    std::abort(); // accepted by the agent's check, refused when started
  const bool same = cfg->name == spec->name && cfg->drive == spec->drive &&
                    cfg->ram_size == spec->memory && cfg->smp == spec->vcpus &&
                    cfg->backend.mem_path == spec->mem_path && cfg->qmp.size() == 1 &&
                    cfg->qmp[0].path == "/run/ferry/" + spec->name + ".qmp";
  if (!same)
    std::abort();
  return 0;
}
