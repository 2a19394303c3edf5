#pragma once
// The typed interface every ferry-agent publishes to the orchestrator (CAF
// middleman over TLS). The orchestrator drives migrations only through QMP
// relayed here: there is no private path into a guest's migration engine.

#include "actors/guest_spec.hpp"

#include <caf/actor.hpp>
#include <caf/atom.hpp>
#include <caf/replies_to.hpp>
#include <caf/typed_actor.hpp>

#include <chrono>
#include <string>
#include <vector>

namespace caf {
class actor_system_config;
}

namespace ferry {

using create_atom = caf::atom_constant<caf::atom("create")>;
using destroy_atom = caf::atom_constant<caf::atom("destroy")>;
using list_atom = caf::atom_constant<caf::atom("list")>;
using capacity_atom = caf::atom_constant<caf::atom("capacity")>;
using qmp_atom = caf::atom_constant<caf::atom("qmp")>;
using subscribe_atom = caf::atom_constant<caf::atom("subscribe")>;
// (qmp_event_atom, host, guest, event JSON) to every subscriber of a guest;
// (qmp_event_atom, host, guest, "") once when the guest's process ends.
using qmp_event_atom = caf::atom_constant<caf::atom("qmpevent")>;
// Local to each daemon, not published: (metrics_atom) -> its Prometheus
// text (the host actor for the agent's /metrics, the cluster actor for the
// orchestrator's).
using metrics_atom = caf::atom_constant<caf::atom("metrics")>;
// (identify_atom, challenge) -> (certificate PEM, signature hex): the host
// proves which host it is (actors/identity_proof.hpp).
using identify_atom = caf::atom_constant<caf::atom("identify")>;

// How long creating a guest may take. Each layer waits a little longer than
// the one it asks, so the lower layer's error, with its reason, arrives
// before the caller's own timeout. A guest process starting on a busy host
// (hundreds at once, or a sanitizer build) can take well over 10 s to open its
// QMP monitor.
inline constexpr std::chrono::seconds guest_monitor_wait{25};
inline constexpr std::chrono::seconds host_create_wait =
  guest_monitor_wait + std::chrono::seconds{3};
inline constexpr std::chrono::seconds create_request_timeout =
  host_create_wait + std::chrono::seconds{2};

using host_actor = caf::typed_actor<
  // Starts a guest; replies once its QMP monitor answers.
  caf::replies_to<create_atom, guest_spec>::with<guest_info>,
  // Ends a guest (QMP quit, then SIGKILL after a grace period).
  caf::replies_to<destroy_atom, std::string>::with<bool>,
  caf::replies_to<list_atom>::with<std::vector<guest_info>>,
  caf::replies_to<capacity_atom>::with<host_capacity>,
  // (guest, command, arguments as a JSON object text) -> the whole QMP reply
  // as JSON text: {"return": ...} or {"error": {"class", "desc"}}.
  caf::replies_to<qmp_atom, std::string, std::string, std::string>::with<std::string>,
  // The subscriber receives the guest's QMP events (see qmp_event_atom).
  caf::replies_to<subscribe_atom, std::string, caf::actor>::with<bool>,
  caf::replies_to<identify_atom, std::string>::with<std::string, std::string>>;

// Registers the control plane's message types; both ends call it.
void add_control_plane_types(caf::actor_system_config& cfg);

} // namespace ferry
