#pragma once
// Where a guest's files may live on a host. A guest spec comes from the
// network (the orchestrator relays an API caller's request), so its boot
// image and RAM file are resolved (symlinks, "..") and must fall inside the
// directories the agent's configuration allows: otherwise a caller could
// have the agent map, grow and write any file it can write.

#include "actors/guest_spec.hpp"

#include <caf/expected.hpp>

#include <string>
#include <vector>

namespace ferry {

struct guest_path_policy {
  std::vector<std::string> images; // boot images (read)
  std::vector<std::string> memory; // RAM files (created, grown, mapped shared)
};

// The spec with its drive and mem_path replaced by their resolved paths, or
// the reason one of them is refused.
caf::expected<guest_spec> confine_guest_paths(guest_spec spec, const guest_path_policy& policy);

} // namespace ferry
