#pragma once
// Counters one migration's threads update and query-migrate reads
// (MigrationStats): relaxed atomics, since each figure only has to be
// right on its own.

#include <boost/json/object.hpp>

#include <atomic>
#include <cstdint>

namespace ferry {

struct migration_counters {
  std::atomic<uint64_t> normal_pages{0};   // pages sent/received with data
  std::atomic<uint64_t> zero_pages{0};     // pages sent/received as "zero"
  std::atomic<uint64_t> precopy_bytes{0};  // sent while the guest ran
  std::atomic<uint64_t> downtime_bytes{0}; // sent while it was stopped
  std::atomic<uint64_t> multifd_bytes{0};  // of those, on multifd channels
  std::atomic<uint64_t> sync_count{0};     // dirty-log syncs (passes)
  std::atomic<bool> guest_stopped{false};  // which of the two byte counts grows
  // XBZRLE (XBZRLECacheStats), source side.
  std::atomic<uint64_t> xbzrle_bytes{0};      // delta records' bytes
  std::atomic<uint64_t> xbzrle_pages{0};      // pages sent as deltas
  std::atomic<uint64_t> xbzrle_cache_miss{0}; // pages not in the cache
  std::atomic<uint64_t> xbzrle_overflow{0};   // deltas too large: sent whole
  std::atomic<uint64_t> xbzrle_checked{0};    // pages looked up in the cache
  // zero-copy-send: flushes (per channel, at each sync) that found the
  // kernel had copied pages after all.
  std::atomic<uint64_t> missed_zero_copy{0};
  // Postcopy: page requests (sent by the destination, served by the source)
  // and the bytes of pages sent after the switch.
  std::atomic<uint64_t> postcopy_requests{0};
  std::atomic<uint64_t> postcopy_bytes{0};

  void add_sent(uint64_t bytes, bool multifd) {
    (guest_stopped.load(std::memory_order_relaxed) ? downtime_bytes : precopy_bytes)
      .fetch_add(bytes, std::memory_order_relaxed);
    if (multifd)
      multifd_bytes.fetch_add(bytes, std::memory_order_relaxed);
  }
};

// One side's MigrationStats at a moment; what a side does not measure stays 0.
struct migration_figures {
  uint64_t transferred = 0;
  uint64_t remaining = 0;
  uint64_t total = 0;
  uint64_t bandwidth = 0; // bytes/s, for mbps
  uint64_t dirty_pages_rate = 0;
  uint64_t pages_per_second = 0;
};

// query-migrate's `ram` member (MigrationStats, every member in schema
// order) from the counters and the side's own figures.
boost::json::object migration_stats_json(const migration_counters& c, const migration_figures& f);

} // namespace ferry
