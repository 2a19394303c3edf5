#pragma once
// calc-dirty-rate / query-dirty-rate: how fast the guest dirties memory,
// measured on a thread of its own ("dirtyrate") over calc-time, in one of
// QEMU's three modes:
//  - page-sampling: hash sample-pages random pages per GiB before and after;
//    the share that changed, times RAM size, over the time.
//  - dirty-bitmap: the guest's dirty log (KVM bitmap or the software log)
//    counts the distinct pages written. It is the log migration uses, so
//    the two exclude each other.
//  - dirty-ring: KVM's per-vCPU rings count the distinct pages each vCPU
//    writes, alongside a migration if there is one; per-vCPU rates too.
// Rates are MiB/s of distinct pages dirtied during the period, as QEMU
// reports them.

#include "agent/vmm/guest.hpp"
#include "common/background_worker.hpp"

#include <boost/json/object.hpp>

#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace ferry {

enum class dirty_rate_mode { page_sampling, dirty_ring, dirty_bitmap };
const char* to_string(dirty_rate_mode m);

struct dirty_rate_request {
  dirty_rate_mode mode = dirty_rate_mode::page_sampling;
  uint64_t calc_time_ms = 1000;
  uint64_t sample_pages = 512; // per GiB, page-sampling only
};

class dirty_rate_meter {
public:
  explicit dirty_rate_meter(guest& g);
  ~dirty_rate_meter(); // abandons a measurement under way
  dirty_rate_meter(const dirty_rate_meter&) = delete;
  dirty_rate_meter& operator=(const dirty_rate_meter&) = delete;

  // Starts a measurement; the reason when one is already under way or the
  // guest cannot be measured that way.
  std::optional<std::string> start(const dirty_rate_request& r);
  bool measuring() const;
  // Whether a measurement holds the guest's dirty log (dirty-bitmap mode).
  bool holds_dirty_log() const;
  // DirtyRateInfo, calc-time in milliseconds or (rounded down) seconds.
  boost::json::object info(bool in_ms) const;

private:
  enum class status { unstarted, measuring, measured };
  void run(dirty_rate_request r);
  // Sleeps calc-time unless the meter is destroyed; false then.
  bool wait_period(uint64_t ms);
  caf::expected<void> sample_pages(const dirty_rate_request& r);
  caf::expected<void> count_bitmap(const dirty_rate_request& r);
  caf::expected<void> count_ring(const dirty_rate_request& r);
  void finish(uint64_t dirty_pages, uint64_t elapsed_ms,
              const std::vector<uint64_t>& per_vcpu = {});

  guest& g_;
  mutable std::mutex mtx_;
  status status_ = status::unstarted;
  dirty_rate_request req_;
  int64_t start_time_ = 0;       // seconds since the epoch
  std::optional<uint64_t> rate_; // MiB/s
  std::vector<uint64_t> vcpu_rates_;
  std::string error_;
  background_worker worker_{mtx_}; // "dirtyrate", one measurement; last: stops first
};

} // namespace ferry
