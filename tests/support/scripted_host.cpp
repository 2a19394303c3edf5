#include "tests/support/scripted_host.hpp"

#include <boost/json.hpp>

#include <algorithm>

namespace ferry::test {

caf::expected<identity::peer> scripted_identity(const identity::proof& p,
                                                const std::string& challenge) {
  constexpr std::string_view tag = "scripted ";
  if (p.signature != challenge || p.cert_pem.rfind(tag, 0) != 0)
    return caf::make_error(caf::sec::runtime_error, "not a scripted proof");
  return identity::peer{"host", p.cert_pem.substr(tag.size())};
}

namespace json = boost::json;

namespace {

caf::error cut_off() {
  return caf::make_error(caf::sec::request_timeout, "the host is cut off");
}

} // namespace

host_actor::behavior_type scripted_host(host_actor::pointer self,
                                        const std::shared_ptr<host_script>& s) {
  return {
    [self, s](create_atom, const guest_spec& spec) -> caf::result<guest_info> {
      if (s->create_fails)
        return caf::make_error(caf::sec::runtime_error, "no room on " + s->name);
      // As the real host: one guest of a name.
      if (std::any_of(s->guests.begin(), s->guests.end(),
                      [&](const guest_info& g) { return g.spec.name == spec.name; }))
        return caf::make_error(caf::sec::runtime_error,
                               "guest '" + spec.name + "' already exists on " + s->name);
      guest_info info;
      info.spec = spec;
      info.pid = 4242;
      info.migration_port = 49152;
      info.alive = true;
      s->guests.push_back(info);
      if (s->hold_create) {
        s->held = self->make_response_promise<guest_info>();
        s->held_info = info;
        return s->held;
      }
      return info;
    },
    [s](destroy_atom, const std::string& guest) -> caf::result<bool> {
      if (s->unreachable)
        return cut_off();
      s->destroyed.push_back(guest);
      if (s->trail)
        s->trail->push_back(s->name + ":destroy");
      std::erase_if(s->guests, [&](const guest_info& g) { return g.spec.name == guest; });
      return true;
    },
    [s](list_atom) -> caf::result<std::vector<guest_info>> {
      ++s->inventories;
      if (s->unreachable || s->inventory_fails)
        return cut_off();
      return s->guests;
    },
    [s](capacity_atom) {
      // The test's way in: a held create is answered from inside the actor.
      if (s->held.pending())
        s->held.deliver(s->held_info);
      uint64_t used = 0;
      for (const auto& g : s->guests)
        used += g.spec.memory;
      return host_capacity{s->name, "127.0.0.1", s->memory_total, used,
                           static_cast<uint32_t>(s->guests.size())};
    },
    [s](qmp_atom, const std::string& guest, const std::string& command,
        const std::string&) -> caf::result<std::string> {
      if (!s->cut_at.empty() && command == s->cut_at)
        s->unreachable = true;
      if (s->unreachable)
        return cut_off();
      s->qmp_seen.push_back(guest + ":" + command);
      if (s->trail)
        s->trail->push_back(s->name + ":" + command);
      auto here = std::find_if(s->guests.begin(), s->guests.end(),
                               [&](const guest_info& g) { return g.spec.name == guest; });
      if (command == "query-migrate" && here != s->guests.end() && here->spec.incoming) {
        const std::string status = s->incoming_statuses.front();
        if (s->incoming_statuses.size() > 1)
          s->incoming_statuses.pop_front();
        if (status == "completed")
          here->spec.incoming = false; // arrived: an ordinary guest now
        json::object info{{"status", status}};
        if (status == "failed")
          info["error-desc"] = "scripted incoming failure";
        return json::serialize(json::object{{"return", info}});
      }
      if (command == "query-migrate") {
        const std::string status = s->migrate_statuses.front();
        if (s->migrate_statuses.size() > 1)
          s->migrate_statuses.pop_front();
        json::object info{{"status", status}};
        info["ram"] = json::object{{"transferred", 1000}, {"remaining", 10}, {"total", 1010}};
        if (s->passes_per_poll != 0) {
          s->passes += s->passes_per_poll;
          info["ram"].as_object()["dirty-sync-count"] = s->passes;
        }
        if (status == "failed")
          info["error-desc"] = "scripted failure";
        if (status == "completed") {
          s->handed_over = true;
          info["total-time"] = 900;
          info["downtime"] = 20;
        }
        return json::serialize(json::object{{"return", info}});
      }
      if (command == "cont")
        s->handed_over = false;
      if (command == "query-status") {
        if (s->handed_over)
          return json::serialize(json::object{{"return", json::object{{"status", "postmigrate"}}}});
        return json::serialize(
          json::object{{"return", json::object{{"status", s->target_status}}}});
      }
      return R"({"return": {}})";
    },
    [](subscribe_atom, const std::string&, const caf::actor&) { return true; },
    // The proof scripted_identity (scripted_host.hpp) accepts: no keys here.
    [s](identify_atom, const std::string& challenge) -> caf::result<std::string, std::string> {
      if (s->unreachable)
        return cut_off();
      return {"scripted " + s->identity, challenge};
    },
  };
}

} // namespace ferry::test
