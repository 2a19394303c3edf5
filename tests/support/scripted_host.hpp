#pragma once
// A host actor that answers from a script (the host_actor interface, whose
// real implementation the cluster process tests drive): for tests of the job
// and cluster actors under CAF's test coordinator, in milliseconds.

#include "actors/host_interface.hpp"
#include "actors/identity_proof.hpp"

#include <caf/all.hpp>

#include <deque>
#include <memory>
#include <string>
#include <vector>

namespace ferry::test {

// What a scripted host answers, and what it was asked.
struct host_script {
  std::string name;
  // Who it proves to be when dialed (default: name; see scripted_identity).
  std::string identity;
  uint64_t memory_total = 1ull << 30;
  std::vector<guest_info> guests;
  bool create_fails = false;
  // Holds the create's answer until the test delivers it.
  bool hold_create = false;
  caf::typed_response_promise<guest_info> held;
  guest_info held_info;
  // query-migrate statuses, one per poll; the last one repeats.
  std::deque<std::string> migrate_statuses{"active"};
  // Dirty-log passes each query-migrate adds (0: none reported).
  uint64_t passes_per_poll = 0;
  uint64_t passes = 0;
  // query-migrate for a guest that came in here (spec.incoming), one per
  // ask; the last repeats. "completed" makes it an ordinary guest.
  std::deque<std::string> incoming_statuses{"completed"};
  std::string target_status = "running"; // query-status on this host
  // The host is cut off: every request fails as to a lost host.
  bool unreachable = false;
  // Its inventory (list) alone fails; everything else answers.
  bool inventory_fails = false;
  uint64_t inventories = 0; // lists asked of it
  // The host is cut off the moment it is asked this QMP command.
  std::string cut_at;
  // The source's guest after its migration completed: paused
  // (postmigrate) until cont.
  bool handed_over = false;
  std::vector<std::string> qmp_seen; // "guest:command"
  std::vector<std::string> destroyed;
  // Shared by several hosts, in the order things happened: "host:command"
  // and "host:destroy".
  std::shared_ptr<std::vector<std::string>> trail;
};

// The host verifier for scripted hosts: accepts what scripted_host answers to
// identify_atom (its `identity`, echoing the challenge), as the real
// identity::check accepts a host's signed proof.
caf::expected<identity::peer> scripted_identity(const identity::proof& p,
                                                const std::string& challenge);

host_actor::behavior_type scripted_host(host_actor::pointer self,
                                        const std::shared_ptr<host_script>& s);

} // namespace ferry::test
