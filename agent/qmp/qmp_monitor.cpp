#include "agent/qmp/qmp_monitor.hpp"

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
    settings_([&] {
      // What the guest itself shows about the host need not be passed in.
      facts.kvm_dirty_ring = facts.kvm_dirty_ring || g.dirty_ring() != nullptr;
      return facts;
    }()) {}

qmp_monitor::~qmp_monitor() {
  // The engines' threads call back into this monitor: stop them first.
  std::unique_ptr<migration_source> out;
  std::unique_ptr<migration_destination> in;
  {
    std::lock_guard lk{mig_mtx_};
    out = std::move(out_);
    in = std::move(in_);
  }
  out.reset();
  in.reset();
}

void qmp_monitor::expect_incoming(bool autostart) {
  incoming_expected_ = true;
  autostart_ = autostart;
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
  if (starts("snapshot-"))
    return "it needs internal snapshots of qcow2 drives, and Ferry's drives are raw";
  if (starts("x-colo-") || cmd == "query-colo-status")
    return "COLO fault tolerance is not implemented yet";
  return "it is not implemented yet";
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
    {"calc-dirty-rate", &qmp_monitor::calc_dirty_rate},
    {"set-vcpu-dirty-limit", &qmp_monitor::set_vcpu_dirty_limit},
    {"cancel-vcpu-dirty-limit", &qmp_monitor::cancel_vcpu_dirty_limit},
    {"query-vcpu-dirty-limit", &qmp_monitor::query_vcpu_dirty_limit},
    {"query-dirty-rate", &qmp_monitor::query_dirty_rate},
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
  {
    // QEMU's run states around a migration.
    std::lock_guard lk{mig_mtx_};
    if (s == run_state::prelaunch && incoming_expected_ && in_status_ != migration_status::failed)
      name = "inmigrate";
    else if (s == run_state::paused && postmigrate_)
      name = "postmigrate";
    else if (s == run_state::paused &&
             (status_ == migration_status::pre_switchover || status_ == migration_status::device))
      name = "finish-migrate";
  }
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
  {
    std::lock_guard lk{mig_mtx_};
    postmigrate_ = {};
    if (s == run_state::prelaunch && incoming_expected_ &&
        in_status_ != migration_status::completed) {
      // QEMU: `cont` while a migration comes in means "start when it lands".
      autostart_ = true;
      stopped_ = {};
      return empty();
    }
  }
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

std::shared_ptr<vcpu_dirty_limit> qmp_monitor::limiter() {
  if (!dirty_limit_ && guest_.dirty_ring() != nullptr)
    dirty_limit_ = std::make_shared<vcpu_dirty_limit>(guest_);
  return dirty_limit_;
}

std::optional<std::string> qmp_monitor::dirty_limit_refusal(const json::object& args,
                                                            const char* verb) const {
  if (guest_.dirty_ring() == nullptr)
    return std::string{"dirty page limit feature requires KVM with accelerator property "
                       "'dirty-ring-size' set"};
  if (const auto* i = args.if_contains("cpu-index")) {
    const int64_t idx = i->to_number<int64_t>();
    if (idx < 0 || idx >= static_cast<int64_t>(guest_.vcpu_count()))
      return std::string{"incorrect cpu index specified"};
  }
  // The migration owns the limit while its dirty-limit capability acts.
  if (out_ && migration_running(status_) && settings_.capability("dirty-limit"))
    return std::string{"can't "} + verb + " dirty page rate limit while migration is running";
  return std::nullopt;
}

qmp_result qmp_monitor::change_dirty_limit(const json::object& args, const char* verb,
                                           uint64_t mib_per_s) {
  std::lock_guard lk{mig_mtx_};
  if (auto why = dirty_limit_refusal(args, verb))
    return generic(std::move(*why));
  std::optional<uint32_t> cpu;
  if (const auto* i = args.if_contains("cpu-index"))
    cpu = static_cast<uint32_t>(i->to_number<int64_t>());
  limiter()->set(cpu, mib_per_s);
  return empty();
}

qmp_result qmp_monitor::set_vcpu_dirty_limit(const json::object& args) {
  // A rate of 0 lifts the limit, as cancel-vcpu-dirty-limit does.
  return change_dirty_limit(args, "set", args.at("dirty-rate").to_number<uint64_t>());
}

qmp_result qmp_monitor::cancel_vcpu_dirty_limit(const json::object& args) {
  return change_dirty_limit(args, "cancel", 0);
}

qmp_result qmp_monitor::query_vcpu_dirty_limit(const json::object&) {
  std::lock_guard lk{mig_mtx_};
  json::array out;
  if (dirty_limit_)
    for (const auto& v : dirty_limit_->limited())
      out.push_back(json::object{{"cpu-index", static_cast<int64_t>(v.index)},
                                 {"limit-rate", v.limit},
                                 {"current-rate", v.current}});
  return json::value(std::move(out));
}

dirty_rate_meter& qmp_monitor::meter() {
  if (!dirty_rate_)
    dirty_rate_ = std::make_unique<dirty_rate_meter>(guest_);
  return *dirty_rate_;
}

qmp_result qmp_monitor::calc_dirty_rate(const json::object& args) {
  // The schema has checked types and enum values; QEMU's range rules here.
  const bool in_ms = args.contains("calc-time-unit") && args.at("calc-time-unit") == "millisecond";
  const int64_t t = args.at("calc-time").to_number<int64_t>();
  constexpr int64_t min_ms = 50;
  constexpr int64_t max_ms = 60000;
  const int64_t ms = in_ms ? t : (t > max_ms ? max_ms + 1 : t * 1000);
  if (ms < min_ms || ms > max_ms)
    return generic("Calculation time is out of range [50ms, 60000ms].");
  dirty_rate_request r;
  r.calc_time_ms = static_cast<uint64_t>(ms);
  if (const auto* m = args.if_contains("mode"))
    r.mode = *m == "dirty-ring"     ? dirty_rate_mode::dirty_ring
             : *m == "dirty-bitmap" ? dirty_rate_mode::dirty_bitmap
                                    : dirty_rate_mode::page_sampling;
  if (const auto* sp = args.if_contains("sample-pages")) {
    if (r.mode != dirty_rate_mode::page_sampling)
      return generic("sample-pages is used only in page-sampling mode");
    const int64_t n = sp->to_number<int64_t>();
    if (n < 128 || n > 16384)
      return generic("sample-pages is out of range[128, 16384].");
    r.sample_pages = static_cast<uint64_t>(n);
  }
  std::lock_guard lk{mig_mtx_};
  // The dirty log has one reader at a time; a migration's passes need it.
  if (r.mode == dirty_rate_mode::dirty_bitmap && out_ && migration_running(status_))
    return generic("mode dirty-bitmap is unavailable while a migration tracks dirty pages, "
                   "use other method instead.");
  if (auto why = meter().start(r))
    return generic(std::move(*why));
  return empty();
}

qmp_result qmp_monitor::query_dirty_rate(const json::object& args) {
  const bool in_ms = args.contains("calc-time-unit") && args.at("calc-time-unit") == "millisecond";
  std::lock_guard lk{mig_mtx_};
  return json::value(meter().info(in_ms));
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
  std::lock_guard lk{mig_mtx_};
  // The outgoing migration once there is one, else the incoming one; before
  // any, QEMU answers an empty MigrationInfo.
  json::object info;
  if (status_ != migration_status::none) {
    info["status"] = to_string(status_);
    if (out_)
      out_->fill_info(status_, info);
  } else if (in_status_ != migration_status::none) {
    info["status"] = to_string(in_status_);
    if (in_)
      in_->fill_info(in_status_, info);
  }
  return json::value(std::move(info));
}

migration_status qmp_monitor::status() const {
  std::lock_guard lk{mig_mtx_};
  return status_;
}

caf::expected<migration_status> qmp_monitor::migration_step(migration_event ev) {
  return migration_step(migration_side::source, ev);
}

caf::expected<migration_status> qmp_monitor::migration_step(migration_side side,
                                                            migration_event ev) {
  std::lock_guard lk{mig_mtx_};
  return step_locked(side, ev);
}

caf::expected<migration_status> qmp_monitor::step_locked(migration_side side, migration_event ev) {
  auto& cur = side == migration_side::source ? status_ : in_status_;
  auto next = step(side, cur, ev);
  if (!next)
    return next;
  cur = *next;
  if (settings_.capability("events"))
    emit_(qmp::event("MIGRATION", json::object{{"status", to_string(cur)}}));
  if (side == migration_side::destination && cur == migration_status::completed && autostart_) {
    if (guest_.start())
      emit_(qmp::event("RESUME"));
  }
  if (side == migration_side::destination && cur == migration_status::failed && exit_on_error_ &&
      on_exit_)
    on_exit_(1);
  return next;
}

bool qmp_monitor::settings_locked() const {
  // An incoming migration still waiting for its source (setup) takes its
  // settings when the source connects, so they may change until then.
  return migration_running(status_) ||
         (migration_running(in_status_) && in_status_ != migration_status::setup);
}

migration_hooks qmp_monitor::hooks_for(migration_side side) {
  migration_hooks h;
  h.step = [this, side](migration_event ev) { return static_cast<bool>(migration_step(side, ev)); };
  h.emit = emit_;
  h.threads = &migration_threads_;
  h.complete = [this, side](guest::pause_guard& g) {
    std::lock_guard lk{mig_mtx_};
    if (!step_locked(side, migration_event::complete))
      return false;
    postmigrate_ = std::move(g);
    return true;
  };
  return h;
}

std::optional<std::string> qmp_monitor::unsupported_settings() const {
  // Capabilities that change what goes on the wire land with later work;
  // until then a migration asking for them is refused, never run without.
  static const char* const later[] = {"rdma-pin-all",     "postcopy-ram",    "x-colo",
                                      "release-ram",      "x-ignore-shared", "zero-copy-send",
                                      "postcopy-preempt", "switchover-ack",  "background-snapshot",
                                      "mapped-ram"};
  for (const char* cap : later)
    if (settings_.capability(cap))
      return std::string{"Migration with capability '"} + cap +
             "' is not implemented yet in this build";
  return std::nullopt;
}

std::array<uint8_t, 16> qmp_monitor::uuid_bytes() const {
  std::array<uint8_t, 16> out{};
  size_t n = 0;
  auto nibble = [](char ch) -> int {
    if (ch >= '0' && ch <= '9')
      return ch - '0';
    if (ch >= 'a' && ch <= 'f')
      return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
      return ch - 'A' + 10;
    return -1;
  };
  int hi = -1;
  for (char ch : id_.uuid) {
    const int v = nibble(ch);
    if (v < 0 || n >= out.size())
      continue;
    if (hi < 0) {
      hi = v;
    } else {
      out[n++] = static_cast<uint8_t>(hi << 4 | v);
      hi = -1;
    }
  }
  return out;
}

namespace {

// Every parameter read this way is a validated non-negative integer.
uint64_t param_u64(const migration_settings& s, const char* name) {
  return as_u64(s.parameter(name)).value_or(0);
}

// multifd-compression as the engines take it (qpl and uadk never get past
// migrate-set-parameters here).
mig::compression compression_setting(const migration_settings& s) {
  const auto& v = s.parameter("multifd-compression");
  if (v.is_string() && v.as_string() == "zlib")
    return mig::compression::zlib;
  if (v.is_string() && v.as_string() == "zstd")
    return mig::compression::zstd;
  return mig::compression::none;
}

} // namespace

std::variant<std::shared_ptr<tls_context>, std::string>
qmp_monitor::tls_for(migration_side side, const migration_address& a) const {
  const std::string id{settings_.parameter("tls-creds").as_string()};
  if (id.empty())
    return std::shared_ptr<tls_context>{};
  const auto it = std::find_if(tls_objects_.begin(), tls_objects_.end(),
                               [&](const auto& o) { return o.id == id; });
  if (it == tls_objects_.end())
    return "No TLS credentials with id '" + id + "'";
  const bool want_server = side == migration_side::destination;
  if (it->server != want_server)
    return std::string{"Expected TLS credentials for a "} + (want_server ? "server" : "client") +
           " endpoint";
  if (!a.bidirectional())
    return "TLS needs a socket transport (tcp: or unix:), not " + a.describe();
  std::string host{settings_.parameter("tls-hostname").as_string()};
  if (!want_server && host.empty()) {
    if (a.type != migration_address::kind::tcp)
      return std::string{"tls-hostname is required for TLS over a unix: socket (the URI names "
                         "no host to check the certificate against)"};
    host = a.host;
  }
  auto ctx = tls_context::create(*it, host);
  if (!ctx)
    return describe(ctx.error());
  return *ctx;
}

qmp_result qmp_monitor::migrate(const json::object& args) {
  if (const auto* r = args.if_contains("resume"); r != nullptr && r->as_bool())
    return generic("Cannot resume if there is no paused migration");
  auto target = parse_migration_target(args.if_contains("uri"), args.if_contains("channels"));
  if (auto* why = std::get_if<std::string>(&target))
    return generic(std::move(*why));
  auto& addr = std::get<migration_address>(target);
  std::unique_ptr<migration_source> finished;
  {
    std::lock_guard lk{mig_mtx_};
    if (migration_running(status_))
      return generic("There's a migration process in progress");
    if (incoming_expected_ && in_status_ != migration_status::completed)
      return generic("Guest is waiting for an incoming migration");
    if (auto why = unsupported_settings())
      return generic(std::move(*why));
    if (dirty_rate_ && dirty_rate_->holds_dirty_log())
      return generic("A dirty-rate measurement in dirty-bitmap mode holds the dirty log; "
                     "migrate when it has ended");
    if (settings_.capability("multifd") && !addr.bidirectional())
      return generic("multifd needs a socket transport (tcp: or unix:); " + addr.describe() +
                     " carries a single stream");
    finished = std::move(out_);
  }
  // Joined outside the lock: its thread may still be returning from a hook.
  finished.reset();

  outgoing_migration plan;
  plan.target = addr;
  plan.multifd = settings_.capability("multifd");
  plan.channels = static_cast<uint32_t>(param_u64(settings_, "multifd-channels"));
  const auto& zpd = settings_.parameter("zero-page-detection");
  plan.detect_zero = !(zpd.is_string() && zpd.as_string() == "none");
  plan.validate_uuid = settings_.capability("validate-uuid");
  plan.compress = compression_setting(settings_);
  plan.compress_level = static_cast<int>(
    param_u64(settings_, plan.compress == mig::compression::zlib ? "multifd-zlib-level"
                                                                 : "multifd-zstd-level"));
  plan.pause_before_switchover = settings_.capability("pause-before-switchover");
  plan.xbzrle = settings_.capability("xbzrle");
  plan.xbzrle_cache_size = param_u64(settings_, "xbzrle-cache-size");
  plan.auto_converge = settings_.capability("auto-converge");
  plan.throttle_trigger_threshold =
    static_cast<unsigned>(param_u64(settings_, "throttle-trigger-threshold"));
  plan.cpu_throttle_initial = static_cast<unsigned>(param_u64(settings_, "cpu-throttle-initial"));
  plan.cpu_throttle_increment =
    static_cast<unsigned>(param_u64(settings_, "cpu-throttle-increment"));
  plan.cpu_throttle_tailslow = settings_.parameter("cpu-throttle-tailslow").as_bool();
  plan.max_cpu_throttle = static_cast<unsigned>(param_u64(settings_, "max-cpu-throttle"));
  plan.dirty_limit_quota = param_u64(settings_, "vcpu-dirty-limit");
  plan.dirty_limit_period_ms = param_u64(settings_, "x-vcpu-dirty-limit-period");
  {
    std::lock_guard lk{mig_mtx_};
    if (settings_.capability("dirty-limit"))
      plan.dirty_limit = limiter();
    auto tls = tls_for(migration_side::source, addr);
    if (auto* why = std::get_if<std::string>(&tls))
      return generic(std::move(*why));
    plan.tls = std::get<std::shared_ptr<tls_context>>(tls);
  }
  plan.events = settings_.capability("events");
  plan.uuid = uuid_bytes();
  plan.max_bandwidth = param_u64(settings_, "max-bandwidth");
  plan.downtime_limit_ms = param_u64(settings_, "downtime-limit");
  plan.avail_switchover_bandwidth = param_u64(settings_, "avail-switchover-bandwidth");

  std::lock_guard lk{mig_mtx_};
  postmigrate_ = {};
  if (auto ok = step_locked(migration_side::source, migration_event::start); !ok)
    return generic(describe(ok.error()));
  out_ =
    std::make_unique<migration_source>(guest_, std::move(plan), hooks_for(migration_side::source));
  return empty();
}

qmp_result qmp_monitor::query_migrationthreads(const json::object&) {
  // The threads of the migrations under way (none once they have ended).
  json::array out;
  for (const auto& [name, tid] : migration_threads_.list())
    out.push_back(json::object{{"name", name}, {"thread-id", tid}});
  return json::value(std::move(out));
}

qmp_result qmp_monitor::migrate_incoming(const json::object& args) {
  auto target = parse_migration_target(args.if_contains("uri"), args.if_contains("channels"));
  if (auto* why = std::get_if<std::string>(&target))
    return generic(std::move(*why));
  auto& addr = std::get<migration_address>(target);
  std::lock_guard lk{mig_mtx_};
  if (!incoming_expected_)
    return generic("'-incoming' was not specified on the command line");
  if (in_status_ != migration_status::none)
    return generic("The incoming migration has already been started");
  if (auto why = unsupported_settings())
    return generic(std::move(*why));
  if (settings_.capability("multifd") && !addr.bidirectional())
    return generic("multifd needs a socket transport (tcp: or unix:); " + addr.describe() +
                   " carries a single stream");
  if (auto tls = tls_for(migration_side::destination, addr);
      std::holds_alternative<std::string>(tls))
    return generic(std::get<std::string>(tls));
  if (const auto* e = args.if_contains("exit-on-error"))
    exit_on_error_ = e->as_bool();
  incoming_migration plan;
  plan.from = addr;
  plan.uuid = uuid_bytes();
  plan.refresh = [this](incoming_migration& p) -> std::optional<std::string> {
    std::lock_guard guard{mig_mtx_};
    p.multifd = settings_.capability("multifd");
    p.channels = static_cast<uint32_t>(param_u64(settings_, "multifd-channels"));
    p.validate_uuid = settings_.capability("validate-uuid");
    p.compress = compression_setting(settings_);
    p.events = settings_.capability("events");
    auto tls = tls_for(migration_side::destination, p.from);
    if (auto* why = std::get_if<std::string>(&tls))
      return *why;
    p.tls = std::get<std::shared_ptr<tls_context>>(tls);
    const std::string authz{settings_.parameter("tls-authz").as_string()};
    p.check_authz = p.tls && !authz.empty();
    p.authz_identity.reset();
    for (const auto& o : authz_objects_)
      if (o.id == authz)
        p.authz_identity = o.identity;
    return std::nullopt;
  };
  if (auto ok = step_locked(migration_side::destination, migration_event::start); !ok)
    return generic(describe(ok.error()));
  auto d =
    migration_destination::listen(guest_, std::move(plan), hooks_for(migration_side::destination));
  if (!d) {
    in_status_ = migration_status::none;
    return generic(describe(d.error()));
  }
  in_ = std::move(*d);
  return empty();
}

qmp_result qmp_monitor::migrate_cancel(const json::object&) {
  // Cancelling when nothing runs does nothing, and says nothing (QEMU): a
  // completed migration stays completed, a failed one failed.
  std::lock_guard lk{mig_mtx_};
  if (!migration_running(status_) || status_ == migration_status::cancelling)
    return empty();
  if (auto ok = step_locked(migration_side::source, migration_event::cancel); !ok)
    return generic(describe(ok.error()));
  if (out_)
    out_->cancel();
  else // no engine behind the state (tests stepping by hand)
    step_locked(migration_side::source, migration_event::cancel_done);
  return empty();
}

qmp_result qmp_monitor::migrate_continue(const json::object& args) {
  const std::string want{args.at("state").as_string()};
  std::lock_guard lk{mig_mtx_};
  if (to_string(status_) != want)
    return generic("Migration not in expected state: " + std::string{to_string(status_)});
  if (auto ok = step_locked(migration_side::source, migration_event::resume_switchover); !ok)
    return generic(describe(ok.error()));
  if (out_)
    out_->resume_switchover();
  return empty();
}

qmp_result qmp_monitor::migrate_pause(const json::object&) {
  std::lock_guard lk{mig_mtx_};
  if (status_ != migration_status::postcopy_active)
    return generic("migrate-pause is currently only supported during postcopy-active state");
  if (auto ok = step_locked(migration_side::source, migration_event::postcopy_broken); !ok)
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
  std::lock_guard lk{mig_mtx_};
  if (status_ == migration_status::none)
    return generic("Postcopy must be started after migration has been started");
  if (auto ok = step_locked(migration_side::source, migration_event::start_postcopy); !ok)
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
  std::lock_guard lk{mig_mtx_};
  if (auto e = settings_.set_capabilities(args.at("capabilities").as_array(), settings_locked()))
    return generic(std::move(*e));
  return empty();
}

qmp_result qmp_monitor::migrate_set_parameters(const json::object& args) {
  std::lock_guard lk{mig_mtx_};
  if (auto e = settings_.set_parameters(args, settings_locked()))
    return generic(std::move(*e));
  if (out_ && migration_running(status_))
    out_->set_parameters(
      {param_u64(settings_, "max-bandwidth"), param_u64(settings_, "downtime-limit"),
       param_u64(settings_, "avail-switchover-bandwidth"),
       param_u64(settings_, "xbzrle-cache-size"), param_u64(settings_, "vcpu-dirty-limit"),
       param_u64(settings_, "x-vcpu-dirty-limit-period")});
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
