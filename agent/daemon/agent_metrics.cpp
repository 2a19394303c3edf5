#include "agent/daemon/agent_metrics.hpp"

#include "agent/migration/migration_state.hpp"
#include "protocol/prometheus_text.hpp"

#include <boost/json.hpp>

#include <optional>
#include <tuple>

namespace ferry {

namespace {

namespace json = boost::json;
using prom::metric_type;

std::optional<double> number_at(const json::object& o, std::string_view key) {
  const auto* v = o.if_contains(key);
  if (v == nullptr || !v->is_number())
    return std::nullopt;
  return v->to_number<double>();
}

std::string string_at(const json::object& o, std::string_view key) {
  const auto* v = o.if_contains(key);
  return v != nullptr && v->is_string() ? std::string{v->as_string()} : std::string{};
}

const json::object& object_at(const json::object& o, std::string_view key) {
  static const json::object empty;
  const auto* v = o.if_contains(key);
  return v != nullptr && v->is_object() ? v->as_object() : empty;
}

// One MigrationInfo figure exported as a gauge: where it sits in the reply,
// and the factor that turns QEMU's unit into the metric's base unit.
struct figure {
  const char* metric;
  const char* section; // "" = MigrationInfo itself, else "ram", "xbzrle-cache", ...
  const char* field;
  double scale;
  const char* help;
  // Reported as 0 while a migration runs and QEMU leaves the field out (it
  // only reports a throttle that is active): a panel then shows "none yet"
  // rather than a gap.
  bool zero_while_running = false;
};

constexpr double ms = 1e-3;
constexpr double us = 1e-6;

// MigrationStats ("ram") and the rest of MigrationInfo, as QEMU names them.
const figure figures[] = {
  {"ferry_migration_transferred_bytes", "ram", "transferred", 1,
   "Bytes sent so far (MigrationStats transferred)."},
  {"ferry_migration_remaining_bytes", "ram", "remaining", 1,
   "Bytes still to send (MigrationStats remaining)."},
  {"ferry_migration_total_bytes", "ram", "total", 1, "Guest RAM size (MigrationStats total)."},
  {"ferry_migration_duplicate_pages", "ram", "duplicate", 1,
   "Zero pages sent as markers (MigrationStats duplicate)."},
  {"ferry_migration_normal_pages", "ram", "normal", 1, "Pages sent whole (MigrationStats normal)."},
  {"ferry_migration_normal_bytes", "ram", "normal-bytes", 1,
   "Bytes of pages sent whole (MigrationStats normal-bytes)."},
  {"ferry_migration_dirty_pages_rate", "ram", "dirty-pages-rate", 1,
   "Pages dirtied per second in the last pass (MigrationStats dirty-pages-rate)."},
  {"ferry_migration_throughput_bytes_per_second", "ram", "mbps", 1e6 / 8,
   "Transfer rate of the last period (MigrationStats mbps, in bytes per second)."},
  {"ferry_migration_dirty_syncs", "ram", "dirty-sync-count", 1,
   "Dirty-log passes so far (MigrationStats dirty-sync-count)."},
  {"ferry_migration_postcopy_requests", "ram", "postcopy-requests", 1,
   "Page requests from the destination during postcopy (MigrationStats postcopy-requests)."},
  {"ferry_migration_page_size_bytes", "ram", "page-size", 1,
   "Target page size (MigrationStats page-size)."},
  {"ferry_migration_multifd_bytes", "ram", "multifd-bytes", 1,
   "Bytes sent on the multifd channels (MigrationStats multifd-bytes)."},
  {"ferry_migration_pages_per_second", "ram", "pages-per-second", 1,
   "Pages sent per second in the last period (MigrationStats pages-per-second)."},
  {"ferry_migration_precopy_bytes", "ram", "precopy-bytes", 1,
   "Bytes sent in precopy (MigrationStats precopy-bytes)."},
  {"ferry_migration_downtime_transferred_bytes", "ram", "downtime-bytes", 1,
   "Bytes sent while the guest was stopped (MigrationStats downtime-bytes)."},
  {"ferry_migration_postcopy_bytes", "ram", "postcopy-bytes", 1,
   "Bytes sent in postcopy (MigrationStats postcopy-bytes)."},
  {"ferry_migration_dirty_sync_missed_zero_copy", "ram", "dirty-sync-missed-zero-copy", 1,
   "Zero-copy sends missed at a dirty sync (MigrationStats dirty-sync-missed-zero-copy)."},
  {"ferry_migration_total_time_seconds", "", "total-time", ms,
   "Time since the migration started, or its whole duration once over (total-time)."},
  {"ferry_migration_setup_time_seconds", "", "setup-time", ms, "Time spent in setup."},
  {"ferry_migration_expected_downtime_seconds", "", "expected-downtime", ms,
   "Downtime expected if the guest stopped now (expected-downtime)."},
  {"ferry_migration_downtime_seconds", "", "downtime", ms,
   "Actual downtime of a completed migration (downtime)."},
  {"ferry_migration_cpu_throttle_percentage", "", "cpu-throttle-percentage", 1,
   "Auto-converge's vCPU throttle (cpu-throttle-percentage; 0 while a migration runs "
   "unthrottled).",
   true},
  {"ferry_migration_dirty_limit_throttle_time_per_round_seconds", "",
   "dirty-limit-throttle-time-per-round", us,
   "Dirty-limit: time a vCPU is held per round (dirty-limit-throttle-time-per-round)."},
  {"ferry_migration_dirty_limit_ring_full_time_seconds", "", "dirty-limit-ring-full-time", us,
   "Dirty-limit: estimated time to fill a vCPU's dirty ring (dirty-limit-ring-full-time)."},
  {"ferry_migration_xbzrle_cache_size_bytes", "xbzrle-cache", "cache-size", 1,
   "XBZRLE page cache size."},
  {"ferry_migration_xbzrle_bytes", "xbzrle-cache", "bytes", 1, "Bytes sent as XBZRLE deltas."},
  {"ferry_migration_xbzrle_pages", "xbzrle-cache", "pages", 1, "Pages sent as XBZRLE deltas."},
  {"ferry_migration_xbzrle_cache_misses", "xbzrle-cache", "cache-miss", 1, "XBZRLE cache misses."},
  {"ferry_migration_xbzrle_cache_miss_ratio", "xbzrle-cache", "cache-miss-rate", 1,
   "XBZRLE cache miss rate of the last period (cache-miss-rate)."},
  {"ferry_migration_xbzrle_encoding_rate", "xbzrle-cache", "encoding-rate", 1,
   "XBZRLE encoding rate of the last period (encoding-rate)."},
  {"ferry_migration_xbzrle_overflows", "xbzrle-cache", "overflow", 1,
   "XBZRLE deltas that overflowed and were sent whole (overflow)."},
  {"ferry_migration_compression_pages", "compression", "pages", 1,
   "Pages compressed (CompressionStats pages)."},
  {"ferry_migration_compression_busy", "compression", "busy", 1,
   "Times compression threads were busy (CompressionStats busy)."},
  {"ferry_migration_compressed_bytes", "compression", "compressed-size", 1,
   "Bytes after compression (CompressionStats compressed-size)."},
  {"ferry_migration_compression_rate", "compression", "compression-rate", 1,
   "Compression ratio of the last period (CompressionStats compression-rate)."},
};

bool migrating(const json::object& info) {
  const std::string s = string_at(info, "status");
  return s == "setup" || s == "active" || s == "postcopy-active" || s == "pre-switchover" ||
         s == "device";
}

// One family with a sample per guest for which `value` has one.
template <class F>
void each_guest(prom::text_writer& w, const agent_metrics_input& in, const char* name,
                metric_type type, const char* help, F&& value) {
  w.family(name, type, help);
  for (const auto& g : in.guests)
    if (auto v = value(g))
      w.sample({{"host", in.capacity.host}, {"vm", g.info.spec.name}}, *v);
}

// MigrationStats figures, their derived rates and the parameters in force.
void migration_families(prom::text_writer& w, const agent_metrics_input& in) {
  for (const auto& f : figures)
    each_guest(w, in, f.metric, metric_type::gauge, f.help,
               [&f](const guest_metrics_input& g) -> std::optional<double> {
                 const auto& where =
                   *f.section == '\0' ? g.migrate : object_at(g.migrate, f.section);
                 auto v = number_at(where, f.field);
                 if (!v && f.zero_while_running && migrating(g.migrate))
                   return 0.0;
                 return v ? std::optional<double>{*v * f.scale} : std::nullopt;
               });
  each_guest(w, in, "ferry_migration_dirty_rate_bytes_per_second", metric_type::gauge,
             "Bytes dirtied per second in the last pass (dirty-pages-rate x page-size), to "
             "compare with the transfer rate.",
             [](const guest_metrics_input& g) -> std::optional<double> {
               const auto& ram = object_at(g.migrate, "ram");
               auto rate = number_at(ram, "dirty-pages-rate");
               auto page = number_at(ram, "page-size");
               if (!rate || !page)
                 return std::nullopt;
               return *rate * *page;
             });
  each_guest(w, in, "ferry_migration_downtime_limit_seconds", metric_type::gauge,
             "The downtime-limit parameter in force.",
             [](const guest_metrics_input& g) -> std::optional<double> {
               auto v = number_at(g.parameters, "downtime-limit");
               return v ? std::optional<double>{*v * ms} : std::nullopt;
             });
  each_guest(w, in, "ferry_migration_max_bandwidth_bytes_per_second", metric_type::gauge,
             "The max-bandwidth parameter in force (0: unlimited).",
             [](const guest_metrics_input& g) { return number_at(g.parameters, "max-bandwidth"); });
  each_guest(w, in, "ferry_migration_multifd_channels", metric_type::gauge,
             "The multifd-channels parameter in force.", [](const guest_metrics_input& g) {
               return number_at(g.parameters, "multifd-channels");
             });
  each_guest(w, in, "ferry_guest_dirty_rate_bytes_per_second", metric_type::gauge,
             "The guest's dirty rate from its last completed calc-dirty-rate.",
             [](const guest_metrics_input& g) -> std::optional<double> {
               if (string_at(g.dirty_rate, "status") != "measured")
                 return std::nullopt;
               auto mib = number_at(g.dirty_rate, "dirty-rate");
               return mib ? std::optional<double>{*mib * 1024 * 1024} : std::nullopt;
             });
}

// A histogram a guest counted (query-migrate's x-ferry-colo), if well formed.
std::optional<prom::histogram> histogram_at(const json::object& o, std::string_view key) {
  const auto& h = object_at(o, key);
  const auto* b = h.if_contains("bounds");
  const auto* c = h.if_contains("counts");
  auto sum = number_at(h, "sum");
  if (b == nullptr || c == nullptr || !b->is_array() || !c->is_array() || !sum)
    return std::nullopt;
  std::vector<double> bounds;
  std::vector<uint64_t> counts;
  for (const auto& v : b->as_array())
    if (v.is_number())
      bounds.push_back(v.to_number<double>());
  for (const auto& v : c->as_array())
    if (v.is_uint64() || v.is_int64())
      counts.push_back(v.to_number<uint64_t>());
  return prom::histogram::from_counts(std::move(bounds), std::move(counts), *sum);
}

// A COLO primary's checkpoints (Ferry's x-ferry-colo member of query-migrate).
void colo_families(prom::text_writer& w, const agent_metrics_input& in) {
  each_guest(w, in, "ferry_colo_checkpoints_total", metric_type::counter,
             "COLO checkpoints this guest's primary committed on its secondary.",
             [](const guest_metrics_input& g) {
               return number_at(object_at(g.migrate, "x-ferry-colo"), "checkpoints");
             });
  for (const auto& [name, key, help] :
       {std::tuple{"ferry_colo_checkpoint_pause_seconds", "pause-seconds",
                   "How long each COLO checkpoint paused the guest (its dirty pages and vCPU "
                   "state copied out)."},
        std::tuple{"ferry_colo_checkpoint_pages", "pages",
                   "Pages each COLO checkpoint carried (dirtied since the one before)."}}) {
    w.family(name, metric_type::histogram, help);
    for (const auto& g : in.guests)
      if (auto h = histogram_at(object_at(g.migrate, "x-ferry-colo"), key))
        w.sample({{"host", in.capacity.host}, {"vm", g.info.spec.name}}, *h);
  }
}

} // namespace

std::string render_agent_metrics(const agent_metrics_input& in) {
  prom::text_writer w;
  const std::string& host = in.capacity.host;
  w.family("ferry_agent_memory_offered_bytes", metric_type::gauge,
           "Memory this host offers to guests.");
  w.sample({{"host", host}}, static_cast<double>(in.capacity.memory_total));
  w.family("ferry_agent_memory_used_bytes", metric_type::gauge,
           "Memory of the guests on this host.");
  w.sample({{"host", host}}, static_cast<double>(in.capacity.memory_used));
  uint64_t incoming = 0;
  for (const auto& g : in.guests)
    incoming += g.info.spec.incoming ? 1 : 0;
  w.family("ferry_agent_guests", metric_type::gauge,
           "Guests on this host; role is \"running\" or \"incoming\" (a migration target).");
  w.sample({{"host", host}, {"role", "running"}}, static_cast<double>(in.guests.size() - incoming));
  w.sample({{"host", host}, {"role", "incoming"}}, static_cast<double>(incoming));

  each_guest(
    w, in, "ferry_guest_up", metric_type::gauge,
    "1 if the guest's QMP monitor answered this scrape.",
    [](const guest_metrics_input& g) -> std::optional<double> { return g.answered ? 1.0 : 0.0; });
  each_guest(w, in, "ferry_guest_memory_bytes", metric_type::gauge, "Guest RAM (-m).",
             [](const guest_metrics_input& g) -> std::optional<double> {
               return static_cast<double>(g.info.spec.memory);
             });
  each_guest(w, in, "ferry_guest_vcpus", metric_type::gauge, "Guest vCPUs (-smp).",
             [](const guest_metrics_input& g) -> std::optional<double> {
               return static_cast<double>(g.info.spec.vcpus);
             });
  each_guest(w, in, "ferry_guest_running", metric_type::gauge,
             "1 if the guest's vCPUs run (query-status running).",
             [](const guest_metrics_input& g) -> std::optional<double> {
               if (!g.answered)
                 return std::nullopt;
               return string_at(g.status, "status") == "running" ? 1.0 : 0.0;
             });

  w.family("ferry_migration_status", metric_type::gauge,
           "1 for the guest's current migration status (query-migrate status; \"none\" before "
           "any migration), 0 for the others.");
  for (const auto& g : in.guests) {
    if (!g.answered)
      continue;
    std::string current = string_at(g.migrate, "status");
    if (current.empty())
      current = "none";
    // One 0/1 series per MigrationStatus value, so a panel can show the
    // current one and an alert can count guests in a state.
    for (size_t i = 0; i < migration_status_count; ++i) {
      const std::string s{to_string(static_cast<migration_status>(i))};
      w.sample({{"host", host}, {"vm", g.info.spec.name}, {"status", s}}, current == s ? 1.0 : 0.0);
    }
  }
  migration_families(w, in);
  colo_families(w, in);
  return w.text();
}

} // namespace ferry
