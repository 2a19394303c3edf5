#include "agent/migration/migration_settings.hpp"

#include "protocol/qapi_catalog.hpp"

#include <boost/json.hpp>

#include <algorithm>
#include <cstdio>
#include <cstdlib>

namespace ferry {

namespace json = boost::json;

namespace {

constexpr uint64_t page_bytes = 4096;
constexpr uint64_t max_downtime_ms = 2000000; // QEMU's MAX_MIGRATE_DOWNTIME

// Parameters QEMU applies to a running migration; the rest only matter when
// a migration starts, so Ferry refuses to change them mid-flight rather than
// accept a value that silently does nothing.
constexpr std::string_view live_parameters[] = {"max-bandwidth",
                                                "avail-switchover-bandwidth",
                                                "downtime-limit",
                                                "max-postcopy-bandwidth",
                                                "throttle-trigger-threshold",
                                                "cpu-throttle-initial",
                                                "cpu-throttle-increment",
                                                "cpu-throttle-tailslow",
                                                "max-cpu-throttle",
                                                "x-checkpoint-delay",
                                                "vcpu-dirty-limit",
                                                "x-vcpu-dirty-limit-period",
                                                "announce-initial",
                                                "announce-max",
                                                "announce-rounds",
                                                "announce-step",
                                                "xbzrle-cache-size"};

// Capabilities incompatible with background-snapshot (QEMU's list).
constexpr std::string_view background_snapshot_conflicts[] = {"postcopy-ram",
                                                              "dirty-bitmaps",
                                                              "postcopy-blocktime",
                                                              "late-block-activate",
                                                              "return-path",
                                                              "multifd",
                                                              "pause-before-switchover",
                                                              "auto-converge",
                                                              "release-ram",
                                                              "rdma-pin-all",
                                                              "xbzrle",
                                                              "x-colo",
                                                              "validate-uuid",
                                                              "zero-copy-send"};

std::string expects(std::string_view name, std::string_view what) {
  return "Parameter '" + std::string{name} + "' expects " + std::string{what};
}

uint64_t u64(const json::object& p, std::string_view name) {
  const auto& v = p.at(name);
  return v.is_uint64() ? v.as_uint64() : static_cast<uint64_t>(v.as_int64());
}

// The members of MigrationParameters in schema order, without the '*'.
std::vector<std::string> parameter_names() {
  std::vector<std::string> names;
  const auto* def = qapi::catalog::migration().find("MigrationParameters");
  for (const auto& kv : def->at("data").as_object()) {
    std::string_view n = kv.key();
    if (n.starts_with('*'))
      n.remove_prefix(1);
    names.emplace_back(n);
  }
  return names;
}

} // namespace

const json::object& migration_settings::defaults() {
  // QEMU 9.1's defaults (migration/options.c properties).
  static const json::object d = {
    {"announce-initial", 50},
    {"announce-max", 550},
    {"announce-rounds", 5},
    {"announce-step", 100},
    {"throttle-trigger-threshold", 50},
    {"cpu-throttle-initial", 20},
    {"cpu-throttle-increment", 10},
    {"cpu-throttle-tailslow", false},
    {"tls-creds", ""},
    {"tls-hostname", ""},
    {"tls-authz", ""},
    {"max-bandwidth", 134217728},
    {"avail-switchover-bandwidth", 0},
    {"downtime-limit", 300},
    {"x-checkpoint-delay", 20000},
    {"multifd-channels", 2},
    {"xbzrle-cache-size", 67108864},
    {"max-postcopy-bandwidth", 0},
    {"max-cpu-throttle", 99},
    {"multifd-compression", "none"},
    {"multifd-zlib-level", 1},
    {"multifd-zstd-level", 1},
    {"x-vcpu-dirty-limit-period", 1000},
    {"vcpu-dirty-limit", 1},
    {"mode", "normal"},
    {"zero-page-detection", "multifd"},
  };
  return d;
}

migration_settings::migration_settings(migration_host_facts facts) : facts_(facts) {
  for (const auto& c : qapi::catalog::migration().enum_values("MigrationCapability"))
    caps_.emplace_back(c, false);
  for (const auto& name : parameter_names()) {
    if (name == "block-bitmap-mapping") {
      params_[name] = json::array{};
      continue;
    }
    const auto* v = defaults().if_contains(name);
    if (v == nullptr) {
      // The schema grew a parameter this table lacks: a build defect.
      std::fprintf(stderr, "ferry: no default for migration parameter '%s'\n", name.c_str());
      std::abort();
    }
    params_[name] = *v;
  }
}

json::array migration_settings::query_capabilities() const {
  json::array out;
  for (const auto& [name, on] : caps_)
    out.push_back(json::object{{"capability", name}, {"state", on}});
  return out;
}

json::object migration_settings::query_parameters() const {
  // Rebuilt rather than erased from: json::object::erase moves the last
  // member into the hole, and QEMU's order is part of the answer.
  json::object out;
  for (const auto& kv : params_)
    if (has_block_bitmap_mapping_ || kv.key() != "block-bitmap-mapping")
      out[kv.key()] = kv.value();
  return out;
}

bool migration_settings::capability(std::string_view name) const {
  for (const auto& [n, on] : caps_)
    if (n == name)
      return on;
  return false;
}

const json::value& migration_settings::parameter(std::string_view name) const {
  return params_.at(name);
}

std::optional<std::string> migration_settings::check_capabilities(
  const std::vector<std::pair<std::string, bool>>& next) const {
  auto on = [&](std::string_view name) {
    for (const auto& [n, v] : next)
      if (n == name)
        return v;
    return false;
  };
  if (on("x-colo") && on("postcopy-ram"))
    return std::string{"COLO is not compatible with postcopy"};
  if (on("postcopy-ram") && on("x-ignore-shared"))
    return std::string{"Postcopy is not compatible with ignore-shared"};
  if (on("background-snapshot"))
    for (auto c : background_snapshot_conflicts)
      if (on(c))
        return "Background-snapshot is not compatible with " + std::string{c};
  const bool tls = !params_.at("tls-creds").as_string().empty();
  if (on("zero-copy-send") &&
      (!on("multifd") || on("xbzrle") || params_.at("multifd-compression") != "none" || tls))
    return std::string{"Zero copy only available for non-compressed non-TLS multifd migration"};
  if (on("postcopy-preempt") && !on("postcopy-ram"))
    return std::string{"Postcopy preempt requires postcopy-ram"};
  if (on("switchover-ack") && !on("return-path"))
    return std::string{"Capability 'switchover-ack' requires capability 'return-path'"};
  if (on("dirty-limit")) {
    if (on("auto-converge"))
      return std::string{"dirty-limit conflicts with auto-converge either of then available "
                         "currently"};
    if (!facts_.kvm_dirty_ring)
      return std::string{"dirty-limit requires KVM with accelerator property 'dirty-ring-size' "
                         "set"};
  }
  if (on("multifd") && on("xbzrle"))
    return std::string{"Multifd is not compatible with xbzrle"};
  if (on("mapped-ram") && on("xbzrle"))
    return std::string{"Mapped-ram migration is incompatible with xbzrle"};
  if (on("mapped-ram") && on("postcopy-ram"))
    return std::string{"Mapped-ram migration is incompatible with postcopy"};
  return std::nullopt;
}

std::optional<std::string> migration_settings::set_capabilities(const json::array& caps,
                                                                bool migration_active) {
  if (migration_active)
    return std::string{"There's a migration process in progress"};
  auto next = caps_;
  for (const auto& c : caps) {
    const std::string name{c.at("capability").as_string()};
    for (auto& [n, v] : next)
      if (n == name)
        v = c.at("state").as_bool();
  }
  if (auto e = check_capabilities(next))
    return e;
  caps_ = std::move(next);
  return std::nullopt;
}

std::optional<std::string> migration_settings::check_parameters(const json::object& p) const {
  auto range = [&](std::string_view n, uint64_t lo, uint64_t hi) {
    return u64(p, n) >= lo && u64(p, n) <= hi;
  };
  if (!range("throttle-trigger-threshold", 1, 100))
    return expects("throttle_trigger_threshold", "an integer in the range of 1 to 100");
  if (!range("cpu-throttle-initial", 1, 99))
    return expects("cpu_throttle_initial", "an integer in the range of 1 to 99");
  if (!range("cpu-throttle-increment", 1, 99))
    return expects("cpu_throttle_increment", "an integer in the range of 1 to 99");
  if (u64(p, "downtime-limit") > max_downtime_ms)
    return expects("downtime_limit", "an integer in the range of 0 to 2000000 ms");
  if (u64(p, "multifd-channels") < 1)
    return expects("multifd_channels", "a value between 1 and 255");
  if (u64(p, "multifd-zlib-level") > 9)
    return expects("multifd_zlib_level", "a value between 0 and 9");
  if (u64(p, "multifd-zstd-level") > 20)
    return expects("multifd_zstd_level", "a value between 0 and 20");
  const uint64_t xbz = u64(p, "xbzrle-cache-size");
  if (xbz < page_bytes || (xbz & (xbz - 1)) != 0)
    return expects("xbzrle_cache_size", "a power of two no less than the target page size");
  if (u64(p, "max-cpu-throttle") < u64(p, "cpu-throttle-initial") ||
      u64(p, "max-cpu-throttle") > 99)
    return expects("max_cpu_throttle", "an integer in the range of cpu_throttle_initial to 99");
  if (u64(p, "announce-initial") > 100000)
    return expects("announce_initial", "a value between 0 and 100000");
  if (u64(p, "announce-max") > 100000)
    return expects("announce_max", "a value between 0 and 100000");
  if (u64(p, "announce-rounds") > 1000)
    return expects("announce_rounds", "a value between 0 and 1000");
  if (!range("announce-step", 1, 10000))
    return expects("announce_step", "a value between 0 and 10000");
  const bool tls = !p.at("tls-creds").as_string().empty();
  const bool compressed = p.at("multifd-compression") != "none";
  if (capability("zero-copy-send") && (compressed || tls))
    return std::string{"Zero copy only available for non-compressed non-TLS multifd migration"};
  if (capability("mapped-ram") && (compressed || tls))
    return std::string{"Mapped-ram only available for non-compressed non-TLS multifd migration"};
  if (!range("x-vcpu-dirty-limit-period", 1, 1000))
    return expects("x-vcpu-dirty-limit-period", "a value between 1 and 1000");
  if (u64(p, "vcpu-dirty-limit") < 1)
    return std::string{"Parameter 'vcpu_dirty_limit' must be greater than 1 MB/s"};
  const auto codec = p.at("multifd-compression").as_string();
  if (codec == "qpl" || codec == "uadk")
    return "Parameter 'multifd-compression' value '" + std::string{codec} +
           "' is not supported on this host";
  return std::nullopt;
}

std::optional<std::string> migration_settings::set_parameters(const json::object& args,
                                                              bool migration_active) {
  json::object next = params_;
  for (const auto& kv : args) {
    if (migration_active && std::find(std::begin(live_parameters), std::end(live_parameters),
                                      kv.key()) == std::end(live_parameters))
      return "Parameter '" + std::string{kv.key()} +
             "' cannot be changed while a migration is in progress";
    // StrOrNull: null resets a TLS option to "" (off), as in QEMU.
    next[kv.key()] = kv.value().is_null() ? json::value("") : kv.value();
  }
  if (auto e = check_parameters(next))
    return e;
  params_ = std::move(next);
  if (args.contains("block-bitmap-mapping"))
    has_block_bitmap_mapping_ = true;
  return std::nullopt;
}

} // namespace ferry
