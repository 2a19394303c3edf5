#include "agent/qmp_monitor.hpp"

#include "agent/agent_error.hpp"
#include "agent/unique_fd.hpp"
#include "protocol/qapi_catalog.hpp"

#include <boost/json.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>

namespace ferry {

namespace json = boost::json;

namespace {

qmp_failure generic(std::string desc) {
  return {qmp::error_class::generic_error, std::move(desc)};
}

// QEMU's argument rules: no unknown members, required members present, and
// each of the expected JSON type.
std::optional<qmp_failure>
check_args(const json::object& args,
           std::initializer_list<std::pair<const char*, json::kind>> spec) {
  for (const auto& kv : args) {
    const bool known =
      std::any_of(spec.begin(), spec.end(), [&](const auto& s) { return kv.key() == s.first; });
    if (!known)
      return generic("Parameter '" + std::string{kv.key()} + "' is unexpected");
  }
  for (const auto& [name, kind] : spec) {
    const auto* v = args.if_contains(name);
    if (v == nullptr)
      return generic(std::string{"Parameter '"} + name + "' is missing");
    const bool ok =
      kind == json::kind::int64 ? (v->is_int64() || v->is_uint64()) : v->kind() == kind;
    if (!ok)
      return generic(std::string{"Invalid parameter type for '"} + name +
                     "', expected: " + (kind == json::kind::string ? "string" : "integer"));
  }
  return std::nullopt;
}

std::optional<uint64_t> as_u64(const json::value& v) {
  if (v.is_uint64())
    return v.as_uint64();
  if (v.is_int64() && v.as_int64() >= 0)
    return static_cast<uint64_t>(v.as_int64());
  return std::nullopt;
}

} // namespace

qmp_monitor::qmp_monitor(guest& g, vm_identity id, std::function<void(std::string)> emit,
                         std::function<void()> on_quit)
  : guest_(g), id_(std::move(id)), emit_(std::move(emit)), on_quit_(std::move(on_quit)) {}

namespace {

// What a schema command still lacks in this build: the reason names the
// missing piece, so a client can tell "not yet" from "never here".
std::string unavailable_reason(std::string_view cmd) {
  auto starts = [&](std::string_view p) { return cmd.substr(0, p.size()) == p; };
  if (starts("xen-") || starts("query-xen-"))
    return "it needs Xen, and Ferry runs its guests on KVM";
  if (starts("snapshot-"))
    return "it needs internal snapshots of qcow2 drives, and Ferry's drives are raw";
  if (starts("x-colo-") || cmd == "query-colo-status")
    return "COLO fault tolerance is not implemented yet";
  if (cmd.find("dirty-rate") != std::string_view::npos ||
      cmd.find("dirty-limit") != std::string_view::npos)
    return "dirty-rate measurement and dirty-limit are not implemented yet";
  return "the migration engine is not implemented yet";
}

const std::vector<std::string>& own_commands() {
  static const std::vector<std::string> names = {
    "qmp_capabilities", "query-commands", "query-status", "query-version", "query-name",
    "query-uuid",       "stop",           "cont",         "quit",          "pmemsave"};
  return names;
}

} // namespace

const std::vector<std::string>& qmp_monitor::implemented_commands() {
  return own_commands();
}

const std::vector<std::string>& qmp_monitor::commands() {
  static const std::vector<std::string> names = [] {
    auto all = own_commands();
    for (const auto& c : qapi::catalog::migration().commands())
      if (std::find(all.begin(), all.end(), c) == all.end())
        all.push_back(c);
    return all;
  }();
  return names;
}

qmp_result qmp_monitor::execute(const std::string& cmd, const json::object& args) {
  const bool no_args = cmd != "pmemsave";
  if (no_args)
    if (auto bad = check_args(args, {}))
      return *bad;

  if (cmd == "query-status") {
    const run_state s = guest_.state();
    return json::value{{"status", to_string(s)}, {"running", s == run_state::running}};
  }
  if (cmd == "query-version")
    return json::value{{"qemu", {{"major", 9}, {"minor", 1}, {"micro", 0}}},
                       {"package", " (ferry)"}};
  if (cmd == "query-name") {
    json::object o;
    if (!id_.name.empty())
      o["name"] = id_.name;
    return json::value(std::move(o));
  }
  if (cmd == "query-uuid")
    return json::value{
      {"UUID", id_.uuid.empty() ? "00000000-0000-0000-0000-000000000000" : id_.uuid}};
  if (cmd == "query-commands") {
    json::array a;
    for (const auto& n : commands())
      a.push_back(json::object{{"name", n}});
    return json::value(std::move(a));
  }
  if (cmd == "stop") {
    // Stopping a stopped guest succeeds quietly, as in QEMU.
    if (!stopped_ && guest_.state() == run_state::running) {
      stopped_ = guest_.pause();
      emit_(qmp::event("STOP"));
    } else if (!stopped_ && guest_.state() == run_state::prelaunch) {
      stopped_ = guest_.pause();
    }
    return json::value(json::object{});
  }
  if (cmd == "cont") {
    const run_state s = guest_.state();
    if (s == run_state::internal_error || s == run_state::shutdown)
      return generic("Resetting the Virtual Machine is required");
    stopped_ = {};
    if (s == run_state::prelaunch) {
      if (auto ok = guest_.start(); !ok)
        return generic(describe(ok.error()));
    }
    if (s != run_state::running)
      emit_(qmp::event("RESUME"));
    return json::value(json::object{});
  }
  if (cmd == "quit") {
    on_quit_();
    return json::value(json::object{});
  }
  if (cmd == "pmemsave") {
    if (auto bad = check_args(args, {{"val", json::kind::int64},
                                     {"size", json::kind::int64},
                                     {"filename", json::kind::string}}))
      return *bad;
    const auto val = as_u64(args.at("val"));
    const auto size = as_u64(args.at("size"));
    const std::string file{args.at("filename").as_string()};
    auto& mem = guest_.memory();
    if (!val || !size || mem.range(*val, *size).empty())
      return generic("Invalid addr " + json::serialize(args.at("val")) + "/size " +
                     json::serialize(args.at("size")) + " specified");
    unique_fd fd{::open(file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)};
    if (!fd)
      return generic("Could not open '" + file + "'");
    const auto src = mem.range(*val, *size);
    size_t done = 0;
    while (done < src.size()) {
      const ssize_t n = ::write(fd.get(), src.data() + done, src.size() - done);
      if (n <= 0)
        return generic("writing memory to '" + file + "' failed");
      done += static_cast<size_t>(n);
    }
    return json::value(json::object{});
  }
  if (qapi::catalog::migration().find(cmd) != nullptr &&
      qapi::catalog::migration().find(cmd)->contains("command"))
    return generic("Command '" + cmd + "' is not available: " + unavailable_reason(cmd));
  return qmp_failure{qmp::error_class::command_not_found,
                     "The command " + cmd + " has not been found"};
}

} // namespace ferry
