#include "agent/qmp/qmp_monitor.hpp"

#include "agent/qmp/qmp_args.hpp"

#include "common/error.hpp"
#include "common/unique_fd.hpp"
#include "protocol/qapi_catalog.hpp"
#include "protocol/qapi_validate.hpp"

#include <boost/json.hpp>

#include <array>

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>

namespace ferry {

namespace json = boost::json;
using qmp_args::as_u64;
using qmp_args::check_args;
using qmp_args::empty;
using qmp_args::generic;

qmp_monitor::qmp_monitor(guest& g, vm_identity id, std::function<void(std::string)> emit,
                         std::function<void()> on_quit, migration_host_facts facts)
  : guest_(g), id_(std::move(id)), emit_(std::move(emit)), on_quit_(std::move(on_quit)),
    settings_([&] {
      // What the guest itself shows about the host need not be passed in.
      facts.kvm_dirty_ring = facts.kvm_dirty_ring || g.dirty_ring() != nullptr;
      return facts;
    }()),
    migration_(g, emit_) {
  migration_.set_events(settings_.capability("events"));
}

qmp_monitor::~qmp_monitor() = default;

void qmp_monitor::expect_incoming(bool autostart) {
  migration_.expect_incoming(autostart);
}

std::optional<std::string> qmp_monitor::start_incoming(const std::string& uri) {
  auto r = migrate_incoming(json::object{{"uri", uri}});
  if (auto* f = std::get_if<qmp_failure>(&r))
    return f->desc;
  return std::nullopt;
}

namespace {

// What a schema command still lacks in this build: the reason names the
// missing piece, so a client can tell "not yet" from "never here".
std::string unavailable_reason(std::string_view cmd) {
  auto starts = [&](std::string_view p) { return cmd.substr(0, p.size()) == p; };
  if (starts("xen-") || starts("query-xen-"))
    return "it needs Xen, and Ferry runs its guests on KVM";
  return "it is not implemented yet";
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
    {"migrate", &qmp_monitor::migrate},
    {"migrate-incoming", &qmp_monitor::migrate_incoming},
    {"query-migrationthreads", &qmp_monitor::query_migrationthreads},
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
    {"query-colo-status", &qmp_monitor::query_colo_status},
    {"x-colo-lost-heartbeat", &qmp_monitor::x_colo_lost_heartbeat},
    {"calc-dirty-rate", &qmp_monitor::calc_dirty_rate},
    {"set-vcpu-dirty-limit", &qmp_monitor::set_vcpu_dirty_limit},
    {"cancel-vcpu-dirty-limit", &qmp_monitor::cancel_vcpu_dirty_limit},
    {"query-vcpu-dirty-limit", &qmp_monitor::query_vcpu_dirty_limit},
    {"query-dirty-rate", &qmp_monitor::query_dirty_rate},
    {"snapshot-save", &qmp_monitor::snapshot_save},
    {"snapshot-load", &qmp_monitor::snapshot_load},
    {"snapshot-delete", &qmp_monitor::snapshot_delete},
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
  std::string name = to_string(s);
  // QEMU's run states around a migration.
  if (auto around = migration_.run_state_name(s))
    name = std::move(*around);
  return json::value{{"status", name}, {"running", s == run_state::running}};
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
  if (migration_.cont_defers_to_incoming(s)) {
    stopped_ = {};
    return empty();
  }
  stopped_ = {};
  {
    std::lock_guard lk{failed_load_mtx_};
    failed_load_hold_ = {};
  }
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

} // namespace ferry
