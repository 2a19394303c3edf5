#include "actors/host_interface.hpp"

#include <caf/actor_system_config.hpp>

namespace ferry {

void add_control_plane_types(caf::actor_system_config& cfg) {
  // add_message_type<T> also registers std::vector<T>.
  cfg.add_message_type<guest_spec>("ferry_guest_spec");
  cfg.add_message_type<guest_info>("ferry_guest_info");
  cfg.add_message_type<host_capacity>("ferry_host_capacity");
}

} // namespace ferry
