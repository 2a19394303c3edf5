#pragma once
// Relays QMP between the control plane and one daemon-mode guest's monitor
// socket. QMP calls block, so the relay is a detached actor (its own thread,
// named "qmp/NAME"); the guest's events are read on a second connection by a
// thread "qmpev/NAME" and fanned out to subscribers.
//
// Messages (local to the agent):
//   (connect_atom)                    -> bool    connect, negotiate, start events
//   (qmp_atom, command, args JSON)    -> string  whole QMP reply as JSON text
//   (subscribe_atom, actor)           -> bool
// Subscribers receive (qmp_event_atom, host, guest, event JSON), and
// (qmp_event_atom, host, guest, "") when the relay ends.

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>

#include <functional>
#include <string>

namespace ferry {

// `exited`: whether the guest's process has ended, so that connecting stops
// waiting for a monitor that will never answer.
caf::actor spawn_guest_qmp_relay(caf::actor_system& sys, std::string host, std::string guest,
                                 std::string qmp_socket, std::function<bool()> exited);

} // namespace ferry
