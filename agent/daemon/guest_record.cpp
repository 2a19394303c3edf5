#include "agent/daemon/guest_record.hpp"

#include "common/error.hpp"
#include "common/log.hpp"

#include <boost/json.hpp>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace ferry {

namespace {

namespace json = boost::json;

std::string path_of(const std::string& run_dir, const std::string& name) {
  return run_dir + "/" + name + ".guest";
}

json::object to_json(const guest_record& r) {
  const auto& s = r.info.spec;
  return {{"name", s.name},
          {"uuid", s.uuid},
          {"memory", s.memory},
          {"vcpus", s.vcpus},
          {"drive", s.drive},
          {"mem_path", s.mem_path},
          {"accel", s.accel},
          {"dirty_ring_size", s.dirty_ring_size},
          {"dirty_rate", s.dirty_rate},
          {"priority", s.priority},
          {"incoming", s.incoming},
          {"migration_peer", s.migration_peer},
          {"pid", r.info.pid},
          {"qmp_socket", r.info.qmp_socket},
          {"migration_port", r.info.migration_port},
          {"start_time", r.start_time}};
}

guest_record from_json(const json::object& o) {
  guest_record r;
  auto& s = r.info.spec;
  s.name = o.at("name").as_string();
  s.uuid = o.at("uuid").as_string();
  s.memory = o.at("memory").to_number<uint64_t>();
  s.vcpus = o.at("vcpus").to_number<uint32_t>();
  s.drive = o.at("drive").as_string();
  s.mem_path = o.at("mem_path").as_string();
  s.accel = o.at("accel").as_string();
  s.dirty_ring_size = o.at("dirty_ring_size").to_number<uint32_t>();
  s.dirty_rate = o.at("dirty_rate").to_number<uint64_t>();
  s.priority = o.at("priority").to_number<int32_t>();
  s.incoming = o.at("incoming").as_bool();
  if (const auto* peer = o.if_contains("migration_peer"); peer != nullptr && peer->is_string())
    s.migration_peer = peer->as_string(); // absent in records of older agents
  r.info.pid = o.at("pid").to_number<int32_t>();
  r.info.qmp_socket = o.at("qmp_socket").as_string();
  r.info.migration_port = o.at("migration_port").to_number<uint16_t>();
  r.start_time = o.at("start_time").to_number<uint64_t>();
  return r;
}

} // namespace

std::optional<uint64_t> process_start_time(int pid) {
  std::ifstream in{"/proc/" + std::to_string(pid) + "/stat"};
  std::string text;
  if (!std::getline(in, text))
    return std::nullopt;
  // comm may hold spaces and parentheses: fields resume after the last ')'.
  const auto close = text.rfind(')');
  if (close == std::string::npos)
    return std::nullopt;
  std::istringstream rest{text.substr(close + 2)};
  std::string field;
  // Field 3 (state) is the first after comm; starttime is field 22.
  for (int i = 3; i < 22 && rest >> field; ++i) {
  }
  uint64_t start = 0;
  if (!(rest >> start))
    return std::nullopt;
  return start;
}

caf::expected<void> write_guest_record(const std::string& run_dir, const guest_record& r) {
  // Written whole to a temporary name, then renamed: a crash never leaves
  // half a record.
  const std::string path = path_of(run_dir, r.info.spec.name);
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out{tmp, std::ios::trunc};
    out << json::serialize(to_json(r)) << "\n";
    if (!out.flush())
      return make_system_error("write " + tmp);
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0)
    return make_system_error("rename " + tmp);
  return {};
}

void remove_guest_record(const std::string& run_dir, const std::string& name) {
  std::remove(path_of(run_dir, name).c_str());
}

std::vector<guest_record> read_guest_records(const std::string& run_dir) {
  std::vector<guest_record> out;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator{run_dir, ec}) {
    if (e.path().extension() != ".guest")
      continue;
    std::ifstream in{e.path()};
    std::stringstream text;
    text << in.rdbuf();
    try {
      out.push_back(from_json(json::parse(text.str()).as_object()));
    } catch (const std::exception& ex) {
      log::warn("ignoring unreadable guest record {}: {}", e.path().string(), ex.what());
    }
  }
  return out;
}

} // namespace ferry
