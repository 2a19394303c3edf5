// The monitor's migration commands: migrate, migrate-incoming, cancel and
// continue, query-migrate, capabilities and parameters (and their legacy
// setters): checks and plans here, the migration itself in the controller.
#include "agent/qmp/qmp_monitor.hpp"

#include "agent/qmp/qmp_args.hpp"
#include "common/error.hpp"

#include <boost/json.hpp>

namespace ferry {

namespace json = boost::json;
using qmp_args::as_u64;
using qmp_args::check_args;
using qmp_args::empty;
using qmp_args::generic;

qmp_result qmp_monitor::query_migrate(const json::object&) {
  return json::value(migration_.info());
}

migration_status qmp_monitor::status() const {
  return migration_.status(migration_side::source);
}

caf::expected<migration_status> qmp_monitor::migration_step(migration_event ev) {
  return migration_step(migration_side::source, ev);
}

caf::expected<migration_status> qmp_monitor::migration_step(migration_side side,
                                                            migration_event ev) {
  return migration_.step(side, ev);
}

std::optional<std::string> qmp_monitor::unsupported_settings() const {
  // Capabilities that change what goes on the wire land with later work;
  // until then a migration asking for them is refused, never run without.
  static const char* const later[] = {"rdma-pin-all"};
  for (const char* cap : later)
    if (settings_.capability(cap))
      return std::string{"Migration with capability '"} + cap +
             "' is not implemented yet in this build";
  return std::nullopt;
}

std::optional<std::string> qmp_monitor::mode_refusal() const {
  if (settings_.parameter("mode") == "cpr-reboot") {
    // The agent that loads the state runs after this one has quit: nothing
    // can follow the stream (the seed's MigMode).
    for (const char* cap : {"postcopy-ram", "x-colo", "background-snapshot"})
      if (settings_.capability(cap))
        return std::string{"Migration mode cpr-reboot cannot be used with capability '"} + cap +
               "'";
  }
  // A COLO secondary keeps its own copy of every checkpoint; one file
  // mapped by both sides would be one copy.
  if (settings_.capability("x-colo") && settings_.capability("x-ignore-shared") &&
      guest_.memory().shared_file())
    return std::string{"COLO needs a copy of guest RAM on each side: x-ignore-shared with RAM "
                       "in a shared file leaves one"};
  return std::nullopt;
}

std::optional<std::string> qmp_monitor::mapped_ram_refusal(const migration_address& a) const {
  if (!settings_.capability("mapped-ram"))
    return std::nullopt;
  if (a.type != migration_address::kind::file)
    return "mapped-ram needs a file: URI (pages sit at fixed offsets); " + a.describe() +
           " is not one";
  if (a.offset != 0)
    return std::string{"mapped-ram with a file: offset is not supported by Ferry"};
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

void qmp_monitor::set_objects(std::vector<tls_creds_object> creds,
                              std::vector<authz_object> authz) {
  std::vector<loaded_creds> loaded;
  loaded.reserve(creds.size());
  for (auto& c : creds) {
    auto ctx = tls_context::create(c, {});
    loaded.push_back({std::move(c), ctx ? *ctx : nullptr, ctx ? "" : describe(ctx.error())});
  }
  std::lock_guard lk{mtx_};
  tls_objects_ = std::move(loaded);
  authz_objects_ = std::move(authz);
}

std::variant<std::shared_ptr<tls_context>, std::string>
qmp_monitor::tls_for(migration_side side, const migration_address& a) const {
  const std::string id{settings_.parameter("tls-creds").as_string()};
  if (id.empty())
    return std::shared_ptr<tls_context>{};
  const auto it = std::find_if(tls_objects_.begin(), tls_objects_.end(),
                               [&](const auto& o) { return o.object.id == id; });
  if (it == tls_objects_.end())
    return "No TLS credentials with id '" + id + "'";
  const bool want_server = side == migration_side::destination;
  if (it->object.server != want_server)
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
  if (!it->context)
    return it->error;
  return it->context->for_host(std::move(host));
}

// Why `migrate` to `a` cannot start now, if so. Caller holds mtx_.
std::optional<std::string> qmp_monitor::migrate_refusal(const migration_address& a) {
  if (auto why = migration_.outgoing_refusal())
    return why;
  if (snapshot_running_)
    return std::string{"A snapshot job holds the guest; migrate when it has concluded"};
  if (auto why = unsupported_settings())
    return why;
  if (dirty_rate_ && dirty_rate_->holds_dirty_log())
    return std::string{"A dirty-rate measurement in dirty-bitmap mode holds the dirty log; "
                       "migrate when it has ended"};
  if (auto why = mode_refusal())
    return why;
  if (auto why = mapped_ram_refusal(a))
    return why;
  if (settings_.capability("multifd") && !settings_.capability("mapped-ram") && !a.bidirectional())
    return "multifd needs a socket transport (tcp: or unix:); " + a.describe() +
           " carries a single stream";
  if (settings_.capability("postcopy-ram") && !a.bidirectional())
    return "postcopy needs a socket transport (tcp: or unix:): the destination asks for pages "
           "on it; " +
           a.describe() + " carries one way only";
  if (settings_.capability("x-colo") && !a.bidirectional())
    return "COLO needs a socket transport (tcp: or unix:): the secondary answers every "
           "checkpoint on it; " +
           a.describe() + " carries one way only";
  return std::nullopt;
}

qmp_result qmp_monitor::migrate(const json::object& args) {
  auto target = parse_migration_target(args.if_contains("uri"), args.if_contains("channels"));
  if (auto* why = std::get_if<std::string>(&target))
    return generic(std::move(*why));
  auto& addr = std::get<migration_address>(target);
  if (const auto* r = args.if_contains("resume"); r != nullptr && r->as_bool()) {
    std::shared_ptr<tls_context> tls;
    {
      std::lock_guard lk{mtx_};
      auto t = tls_for(migration_side::source, addr);
      if (auto* why = std::get_if<std::string>(&t))
        return generic(std::move(*why));
      tls = std::get<std::shared_ptr<tls_context>>(t);
    }
    if (auto why = migration_.resume_outgoing(addr, std::move(tls)))
      return generic(std::move(*why));
    return empty();
  }
  {
    std::lock_guard lk{mtx_};
    if (auto why = migrate_refusal(addr))
      return generic(std::move(*why));
  }

  outgoing_migration plan;
  plan.target = addr;
  plan.multifd = settings_.capability("multifd");
  plan.channels = static_cast<uint32_t>(param_u64(settings_, "multifd-channels"));
  const auto& zpd = settings_.parameter("zero-page-detection");
  plan.detect_zero = !(zpd.is_string() && zpd.as_string() == "none");
  plan.zero_copy = settings_.capability("zero-copy-send");
  plan.validate_uuid = settings_.capability("validate-uuid");
  plan.compress = compression_setting(settings_);
  plan.compress_level = static_cast<int>(
    param_u64(settings_, plan.compress == mig::compression::zlib ? "multifd-zlib-level"
                                                                 : "multifd-zstd-level"));
  plan.pause_before_switchover = settings_.capability("pause-before-switchover");
  // Only a shared file is left out: a private or memfd RAM cannot be
  // reached by another agent, so it migrates as without the capability.
  plan.ignore_shared = settings_.capability("x-ignore-shared") && guest_.memory().shared_file();
  plan.stop_first = settings_.parameter("mode") == "cpr-reboot";
  plan.background_snapshot = settings_.capability("background-snapshot");
  // mapped-ram: multifd-channels threads write the pages in parallel into
  // the one file, instead of channels.
  if (settings_.capability("mapped-ram")) {
    plan.mapped_ram = true;
    plan.mapped_threads = plan.multifd ? plan.channels : 1;
    plan.multifd = false;
  }
  plan.postcopy = settings_.capability("postcopy-ram");
  plan.preempt = settings_.capability("postcopy-preempt");
  plan.release_ram = settings_.capability("release-ram");
  plan.switchover_ack = settings_.capability("switchover-ack");
  plan.colo = settings_.capability("x-colo");
  plan.checkpoint_delay_ms = param_u64(settings_, "x-checkpoint-delay");
  plan.colo_fence_ms = colo_fence_ms_;
  plan.colo_compare = colo_compare_;
  plan.max_postcopy_bandwidth = param_u64(settings_, "max-postcopy-bandwidth");
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
    std::lock_guard lk{mtx_};
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

  if (auto why = migration_.start_outgoing(std::move(plan)))
    return generic(std::move(*why));
  return empty();
}

qmp_result qmp_monitor::query_migrationthreads(const json::object&) {
  // The threads of the migrations under way (none once they have ended).
  json::array out;
  for (const auto& [name, tid] : migration_.threads().list())
    out.push_back(json::object{{"name", name}, {"thread-id", tid}});
  return json::value(std::move(out));
}

qmp_result qmp_monitor::migrate_incoming(const json::object& args) {
  auto target = parse_migration_target(args.if_contains("uri"), args.if_contains("channels"));
  if (auto* why = std::get_if<std::string>(&target))
    return generic(std::move(*why));
  auto& addr = std::get<migration_address>(target);
  std::lock_guard lk{mtx_};
  if (auto why = migration_.incoming_refusal())
    return generic(std::move(*why));
  if (auto why = unsupported_settings())
    return generic(std::move(*why));
  if (auto why = mapped_ram_refusal(addr))
    return generic(std::move(*why));
  if (settings_.capability("multifd") && !settings_.capability("mapped-ram") &&
      !addr.bidirectional())
    return generic("multifd needs a socket transport (tcp: or unix:); " + addr.describe() +
                   " carries a single stream");
  if (auto tls = tls_for(migration_side::destination, addr);
      std::holds_alternative<std::string>(tls))
    return generic(std::get<std::string>(tls));
  std::optional<bool> exit_on_error;
  if (const auto* e = args.if_contains("exit-on-error"))
    exit_on_error = e->as_bool();
  incoming_migration plan;
  plan.from = addr;
  plan.uuid = uuid_bytes();
  plan.refresh = [this](incoming_migration& p) -> std::optional<std::string> {
    std::lock_guard guard{mtx_};
    p.multifd = settings_.capability("multifd");
    p.channels = static_cast<uint32_t>(param_u64(settings_, "multifd-channels"));
    p.validate_uuid = settings_.capability("validate-uuid");
    p.postcopy = settings_.capability("postcopy-ram");
    p.preempt = settings_.capability("postcopy-preempt");
    p.blocktime = settings_.capability("postcopy-blocktime");
    p.switchover_ack = settings_.capability("switchover-ack");
    p.colo = settings_.capability("x-colo");
    p.ignore_shared = settings_.capability("x-ignore-shared");
    p.mapped_ram = settings_.capability("mapped-ram");
    p.mapped_threads = p.multifd ? p.channels : 1;
    if (p.mapped_ram)
      p.multifd = false; // threads reading the file, not channels
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
  if (auto why = migration_.start_incoming(std::move(plan), exit_on_error))
    return generic(std::move(*why));
  return empty();
}

qmp_result qmp_monitor::migrate_cancel(const json::object&) {
  if (auto why = migration_.cancel())
    return generic(std::move(*why));
  return empty();
}

qmp_result qmp_monitor::migrate_continue(const json::object& args) {
  if (auto why = migration_.resume_switchover(std::string{args.at("state").as_string()}))
    return generic(std::move(*why));
  return empty();
}

qmp_result qmp_monitor::migrate_pause(const json::object&) {
  if (auto why = migration_.pause_postcopy())
    return generic(std::move(*why));
  return empty();
}

qmp_result qmp_monitor::migrate_recover(const json::object& args) {
  auto target = parse_migration_target(args.if_contains("uri"), nullptr);
  if (auto* why = std::get_if<std::string>(&target))
    return generic(std::move(*why));
  if (auto why = migration_.recover_incoming(std::get<migration_address>(target)))
    return generic(std::move(*why));
  return empty();
}

qmp_result qmp_monitor::migrate_start_postcopy(const json::object&) {
  if (!settings_.capability("postcopy-ram"))
    return generic("Enable postcopy with migrate_set_capability before the start of migration");
  if (auto why = migration_.start_postcopy())
    return generic(std::move(*why));
  return empty();
}

qmp_result qmp_monitor::query_migrate_capabilities(const json::object&) {
  return json::value(settings_.query_capabilities());
}

qmp_result qmp_monitor::query_migrate_parameters(const json::object&) {
  return json::value(settings_.query_parameters());
}

qmp_result qmp_monitor::migrate_set_capabilities(const json::object& args) {
  std::lock_guard lk{mtx_};
  if (auto e = settings_.set_capabilities(args.at("capabilities").as_array(),
                                          migration_.settings_locked()))
    return generic(std::move(*e));
  migration_.set_events(settings_.capability("events"));
  return empty();
}

qmp_result qmp_monitor::migrate_set_parameters(const json::object& args) {
  std::lock_guard lk{mtx_};
  if (auto e = settings_.set_parameters(args, migration_.settings_locked()))
    return generic(std::move(*e));
  migration_.tune(
    {param_u64(settings_, "max-bandwidth"), param_u64(settings_, "downtime-limit"),
     param_u64(settings_, "avail-switchover-bandwidth"), param_u64(settings_, "xbzrle-cache-size"),
     param_u64(settings_, "vcpu-dirty-limit"), param_u64(settings_, "x-vcpu-dirty-limit-period")});
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
