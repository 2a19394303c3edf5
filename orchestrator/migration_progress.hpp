#pragma once
// A migration's progress as the job last read it from the source's
// query-migrate: read once, by the job, into the figures the cluster needs
// (API, metrics, bandwidth estimate); the object itself is kept for the
// API's "progress" member.

#include <boost/json/object.hpp>

#include <cstdint>
#include <optional>
#include <string>

namespace ferry {

struct migration_progress {
  std::optional<uint64_t> transferred; // ram.transferred, bytes
  std::optional<uint64_t> remaining;   // ram.remaining, bytes
  std::optional<uint64_t> passes;      // ram.dirty-sync-count
  std::optional<double> rate;          // ram.mbps, in bytes/s
  std::optional<double> total_s;       // total-time
  std::optional<double> downtime_s;    // downtime
  // The downtime-limit the job had in force (the ladder raises it); none
  // when unknown (a job resumed after a restart reports 0).
  std::optional<double> downtime_limit_s;
  std::string status; // the source's migration status ("" when unknown)
  // Postcopy, as the job adds them: time paused so far (all pauses), the
  // target's vCPU blocktime.
  std::optional<double> postcopy_paused_s;
  std::optional<double> postcopy_blocktime_s;
  boost::json::object raw;

  // The figures of a query-migrate answer (as the job keeps it).
  static migration_progress from(boost::json::object o);
  // The same from JSON text; anything malformed gives no figures, never an
  // error.
  static migration_progress parse(const std::string& text);
  // Bytes sent over total time, for a finished migration; 0 without both.
  double average_rate() const;
};

} // namespace ferry
