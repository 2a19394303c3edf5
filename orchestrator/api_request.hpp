#pragma once
// What an API request asks for, read from its method, target and JSON body
// alone (no cluster involved): one command, or the HTTP error a malformed
// request gets. http_api.cpp carries the command to the cluster actor; the
// fuzz target feeds this hostile requests.

#include <cstdint>
#include <string>
#include <variant>

namespace ferry::api {

struct list {
  std::string what; // hosts, guests, migrations, evacuations, pairs, snapshots
};
struct migrate {
  std::string guest;
  std::string to; // "": the orchestrator picks
};
struct create {
  std::string host;
  std::string spec_json; // the guest spec, checked by the cluster (guest_spec_json.hpp)
};
struct evacuate {
  std::string host;
};
struct cancel {
  int64_t id = 0;
};
struct protect {
  std::string guest;
  std::string secondary; // "": the orchestrator picks
};
struct unprotect {
  std::string guest;
};
struct snapshot {
  std::string guest;
  std::string tag;
  std::string op; // save (default), restore, delete
};
struct error {
  unsigned status = 400; // 400, 404 or 405
  std::string body;      // {"error": ...}
};

using command =
  std::variant<list, migrate, create, evacuate, cancel, protect, unprotect, snapshot, error>;

// The API's error body, {"error": desc}: every refusal and failure has it.
std::string error_body(const std::string& desc);

// `target` is the path as sent (/api/v1/...); events and /metrics are not
// commands and are answered before this.
command parse_request(const std::string& method, const std::string& target,
                      const std::string& body);

} // namespace ferry::api
