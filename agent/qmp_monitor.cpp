#include "agent/qmp_monitor.hpp"

#include "agent/agent_error.hpp"
#include "agent/unique_fd.hpp"
#include "protocol/qapi_catalog.hpp"
#include "protocol/qapi_validate.hpp"

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

// QEMU's argument rules for the commands outside the 9.1 schema (pmemsave,
// the legacy ones): no unknown members, required members present, each of
// its JSON type (int64 = integer, double_ = any number, string).
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
    const char* expected = kind == json::kind::string    ? "string"
                           : kind == json::kind::double_ ? "number"
                                                         : "integer";
    const bool ok = kind == json::kind::string    ? v->is_string()
                    : kind == json::kind::double_ ? v->is_number()
                                                  : (v->is_int64() || v->is_uint64());
    if (!ok)
      return generic(std::string{"Invalid parameter type for '"} + name +
                     "', expected: " + expected);
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
                         std::function<void()> on_quit, migration_host_facts facts)
  : guest_(g), id_(std::move(id)), emit_(std::move(emit)), on_quit_(std::move(on_quit)),
    settings_(facts) {}

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

json::value empty() {
  return json::value(json::object{});
}

} // namespace

const std::vector<qmp_monitor::entry>& qmp_monitor::table() {
  static const std::vector<entry> t = {
    {"qmp_capabilities", nullptr}, // the session's business (qmp_server)
    {"query-commands", &qmp_monitor::query_commands},
    {"query-status", &qmp_monitor::query_status},
    {"query-version", &qmp_monitor::query_version},
    {"query-name", &qmp_monitor::query_name},
    {"query-uuid", &qmp_monitor::query_uuid},
    {"stop", &qmp_monitor::stop},
    {"cont", &qmp_monitor::cont},
    {"quit", &qmp_monitor::quit},
    {"pmemsave", &qmp_monitor::pmemsave, true},
    {"query-migrate", &qmp_monitor::query_migrate},
    {"query-migrate-capabilities", &qmp_monitor::query_migrate_capabilities},
    {"query-migrate-parameters", &qmp_monitor::query_migrate_parameters},
    {"migrate-set-capabilities", &qmp_monitor::migrate_set_capabilities},
    {"migrate-set-parameters", &qmp_monitor::migrate_set_parameters},
    {"migrate_set_speed", &qmp_monitor::migrate_set_speed, true},
    {"migrate_set_downtime", &qmp_monitor::migrate_set_downtime, true},
    {"migrate-set-cache-size", &qmp_monitor::migrate_set_cache_size, true},
    {"query-migrate-cache-size", &qmp_monitor::query_migrate_cache_size},
    {"migrate_cancel", &qmp_monitor::migrate_cancel},
    {"migrate-continue", &qmp_monitor::migrate_continue},
    {"migrate-pause", &qmp_monitor::migrate_pause},
    {"migrate-recover", &qmp_monitor::migrate_recover},
    {"migrate-start-postcopy", &qmp_monitor::migrate_start_postcopy},
    {"query-jobs", &qmp_monitor::query_jobs},
    {"job-dismiss", &qmp_monitor::job_dismiss, true},
  };
  return t;
}

const std::vector<std::string>& qmp_monitor::implemented_commands() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> out;
    for (const auto& e : table())
      out.emplace_back(e.name);
    return out;
  }();
  return names;
}

const std::vector<std::string>& qmp_monitor::commands() {
  static const std::vector<std::string> names = [] {
    auto all = implemented_commands();
    for (const auto& c : qapi::catalog::migration().commands())
      if (std::find(all.begin(), all.end(), c) == all.end())
        all.push_back(c);
    return all;
  }();
  return names;
}

qmp_result qmp_monitor::execute(const std::string& cmd, const json::object& args) {
  const auto& cat = qapi::catalog::migration();
  const auto* schema = cat.find(cmd);
  if (schema != nullptr && !schema->contains("command"))
    schema = nullptr; // a type's name, not a command's
  if (schema != nullptr) {
    if (auto bad = qapi::check_arguments(cat, *schema, args))
      return generic(std::move(*bad));
  }
  for (const auto& e : table()) {
    if (cmd != e.name || e.fn == nullptr)
      continue;
    if (schema == nullptr && !e.own_arguments)
      if (auto bad = check_args(args, {}))
        return *bad;
    return (this->*e.fn)(args);
  }
  if (schema != nullptr)
    return generic("Command '" + cmd + "' is not available: " + unavailable_reason(cmd));
  return qmp_failure{qmp::error_class::command_not_found,
                     "The command " + cmd + " has not been found"};
}

qmp_result qmp_monitor::query_status(const json::object&) {
  const run_state s = guest_.state();
  return json::value{{"status", to_string(s)}, {"running", s == run_state::running}};
}

qmp_result qmp_monitor::query_version(const json::object&) {
  return json::value{{"qemu", {{"major", 9}, {"minor", 1}, {"micro", 0}}}, {"package", " (ferry)"}};
}

qmp_result qmp_monitor::query_name(const json::object&) {
  json::object o;
  if (!id_.name.empty())
    o["name"] = id_.name;
  return json::value(std::move(o));
}

qmp_result qmp_monitor::query_uuid(const json::object&) {
  return json::value{
    {"UUID", id_.uuid.empty() ? "00000000-0000-0000-0000-000000000000" : id_.uuid}};
}

qmp_result qmp_monitor::query_commands(const json::object&) {
  json::array a;
  for (const auto& n : commands())
    a.push_back(json::object{{"name", n}});
  return json::value(std::move(a));
}

qmp_result qmp_monitor::stop(const json::object&) {
  // Stopping a stopped guest succeeds quietly, as in QEMU.
  const run_state s = guest_.state();
  if (!stopped_ && (s == run_state::running || s == run_state::prelaunch)) {
    stopped_ = guest_.pause();
    if (s == run_state::running)
      emit_(qmp::event("STOP"));
  }
  return empty();
}

qmp_result qmp_monitor::cont(const json::object&) {
  const run_state s = guest_.state();
  if (s == run_state::internal_error || s == run_state::shutdown)
    return generic("Resetting the Virtual Machine is required");
  stopped_ = {};
  if (s == run_state::prelaunch)
    if (auto ok = guest_.start(); !ok)
      return generic(describe(ok.error()));
  if (s != run_state::running)
    emit_(qmp::event("RESUME"));
  return empty();
}

qmp_result qmp_monitor::quit(const json::object&) {
  on_quit_();
  return empty();
}

qmp_result qmp_monitor::pmemsave(const json::object& args) {
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
  return empty();
}

qmp_result qmp_monitor::query_jobs(const json::object&) {
  // No job (snapshot-*) has ever run here: snapshots need qcow2 drives.
  return json::value(json::array{});
}

qmp_result qmp_monitor::job_dismiss(const json::object& args) {
  if (auto bad = check_args(args, {{"id", json::kind::string}}))
    return *bad;
  return generic("Job not found");
}

qmp_result qmp_monitor::query_migrate(const json::object&) {
  // Before any migration QEMU answers an empty MigrationInfo.
  if (status_ == migration_status::none)
    return empty();
  return json::value{{"status", to_string(status_)}};
}

caf::expected<migration_status> qmp_monitor::migration_step(migration_event ev) {
  auto next = step(migration_side::source, status_, ev);
  if (!next)
    return next;
  status_ = *next;
  if (settings_.capability("events"))
    emit_(qmp::event("MIGRATION", json::object{{"status", to_string(status_)}}));
  return next;
}

qmp_result qmp_monitor::migrate_cancel(const json::object&) {
  // Cancelling when nothing runs does nothing, and says nothing (QEMU): a
  // completed migration stays completed, a failed one failed.
  if (!migration_running(status_) || status_ == migration_status::cancelling)
    return empty();
  if (auto ok = migration_step(migration_event::cancel); !ok)
    return generic(describe(ok.error()));
  return empty();
}

qmp_result qmp_monitor::migrate_continue(const json::object& args) {
  const std::string want{args.at("state").as_string()};
  if (to_string(status_) != want)
    return generic("Migration not in expected state: " + std::string{to_string(status_)});
  if (auto ok = migration_step(migration_event::resume_switchover); !ok)
    return generic(describe(ok.error()));
  return empty();
}

qmp_result qmp_monitor::migrate_pause(const json::object&) {
  if (status_ != migration_status::postcopy_active)
    return generic("migrate-pause is currently only supported during postcopy-active state");
  if (auto ok = migration_step(migration_event::postcopy_broken); !ok)
    return generic(describe(ok.error()));
  return empty();
}

qmp_result qmp_monitor::migrate_recover(const json::object&) {
  // Recovery is the destination's command; this agent has no incoming
  // migration yet, so it is never paused in postcopy.
  return generic("Migrate recover can only be run when postcopy is paused.");
}

qmp_result qmp_monitor::migrate_start_postcopy(const json::object&) {
  if (!settings_.capability("postcopy-ram"))
    return generic("Enable postcopy with migrate_set_capability before the start of migration");
  if (status_ == migration_status::none)
    return generic("Postcopy must be started after migration has been started");
  if (auto ok = migration_step(migration_event::start_postcopy); !ok)
    return generic(describe(ok.error()));
  return empty();
}

qmp_result qmp_monitor::query_migrate_capabilities(const json::object&) {
  return json::value(settings_.query_capabilities());
}

qmp_result qmp_monitor::query_migrate_parameters(const json::object&) {
  return json::value(settings_.query_parameters());
}

qmp_result qmp_monitor::migrate_set_capabilities(const json::object& args) {
  if (auto e =
        settings_.set_capabilities(args.at("capabilities").as_array(), migration_running(status_)))
    return generic(std::move(*e));
  return empty();
}

qmp_result qmp_monitor::migrate_set_parameters(const json::object& args) {
  if (auto e = settings_.set_parameters(args, migration_running(status_)))
    return generic(std::move(*e));
  return empty();
}

qmp_result qmp_monitor::set_size_parameter(const json::object& args, const char* parameter) {
  if (auto bad = check_args(args, {{"value", json::kind::int64}}))
    return *bad;
  const auto v = as_u64(args.at("value"));
  if (!v)
    return generic("Parameter 'value' expects size");
  return migrate_set_parameters(json::object{{parameter, *v}});
}

qmp_result qmp_monitor::migrate_set_speed(const json::object& args) {
  return set_size_parameter(args, "max-bandwidth");
}

qmp_result qmp_monitor::migrate_set_downtime(const json::object& args) {
  // Seconds, as a number (QEMU 2.x); mapped onto downtime-limit in ms.
  if (auto bad = check_args(args, {{"value", json::kind::double_}}))
    return *bad;
  const double secs = args.at("value").to_number<double>();
  if (!(secs >= 0 && secs <= 2000))
    return generic("Parameter 'downtime_limit' expects an integer in the range of 0 to 2000 "
                   "seconds");
  return migrate_set_parameters(
    json::object{{"downtime-limit", static_cast<uint64_t>(secs * 1000)}});
}

qmp_result qmp_monitor::migrate_set_cache_size(const json::object& args) {
  return set_size_parameter(args, "xbzrle-cache-size");
}

qmp_result qmp_monitor::query_migrate_cache_size(const json::object&) {
  return settings_.parameter("xbzrle-cache-size");
}

} // namespace ferry
