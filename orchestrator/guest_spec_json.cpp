#include "orchestrator/guest_spec_json.hpp"

#include "orchestrator/orchestrator_error.hpp"

#include <boost/json.hpp>

namespace ferry {

namespace json = boost::json;

caf::expected<guest_spec> guest_spec_from_json(const std::string& text) {
  json::object o;
  try {
    auto v = json::parse(text);
    if (!v.is_object())
      throw std::invalid_argument{"not an object"};
    o = v.as_object();
  } catch (const std::exception&) {
    return make_orchestrator_error(orchestrator_errc::invalid_request,
                                   "a guest spec must be a JSON object");
  }
  guest_spec s;
  try {
    for (const auto& [k, v] : o) {
      if (k == "name")
        s.name = v.as_string();
      else if (k == "uuid")
        s.uuid = v.as_string();
      else if (k == "memory")
        s.memory = v.to_number<uint64_t>();
      else if (k == "vcpus")
        s.vcpus = v.to_number<uint32_t>();
      else if (k == "drive")
        s.drive = v.as_string();
      else if (k == "mem_path")
        s.mem_path = v.as_string();
      else if (k == "accel")
        s.accel = v.as_string();
      else if (k == "dirty_ring_size")
        s.dirty_ring_size = v.to_number<uint32_t>();
      else if (k == "dirty_rate")
        s.dirty_rate = v.to_number<uint64_t>();
      else if (k == "priority")
        s.priority = v.to_number<int32_t>();
      else
        return make_orchestrator_error(orchestrator_errc::invalid_request,
                                       "unknown guest spec member '" + std::string{k} + "'");
    }
  } catch (const std::exception& e) {
    return make_orchestrator_error(orchestrator_errc::invalid_request,
                                   std::string{"guest spec: wrong type: "} + e.what());
  }
  return s;
}

} // namespace ferry
