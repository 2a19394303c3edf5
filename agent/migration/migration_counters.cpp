#include "agent/migration/migration_counters.hpp"

#include "protocol/migration_stream.hpp"

namespace ferry {

boost::json::object migration_stats_json(const migration_counters& c, const migration_figures& f) {
  const uint64_t normal = c.normal_pages;
  return boost::json::object{
    {"transferred", f.transferred},
    {"remaining", f.remaining},
    {"total", f.total},
    {"duplicate", c.zero_pages.load()},
    {"normal", normal},
    {"normal-bytes", normal * mig::page_size},
    {"dirty-pages-rate", f.dirty_pages_rate},
    {"mbps", static_cast<double>(f.bandwidth) * 8.0 / 1e6},
    {"dirty-sync-count", c.sync_count.load()},
    {"postcopy-requests", c.postcopy_requests.load()},
    {"page-size", mig::page_size},
    {"multifd-bytes", c.multifd_bytes.load()},
    {"pages-per-second", f.pages_per_second},
    {"precopy-bytes", c.precopy_bytes.load()},
    {"downtime-bytes", c.downtime_bytes.load()},
    {"postcopy-bytes", c.postcopy_bytes.load()},
    {"dirty-sync-missed-zero-copy", c.missed_zero_copy.load()},
  };
}

} // namespace ferry
