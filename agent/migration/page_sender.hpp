#pragma once
// One sending thread of an outgoing migration ("mig-send/N"): takes batches
// of page indices, marks zero pages, and writes page records on its channel,
// the data straight from guest RAM (with XBZRLE, from a snapshot the cache
// keeps). Pages are assigned to senders by address, so one page always
// travels on the same channel and a newer copy can never overtake an older.

#include "agent/migration/migration_counters.hpp"
#include "agent/migration/rate_limiter.hpp"
#include "agent/migration/thread_registry.hpp"
#include "agent/migration/xbzrle_cache.hpp"
#include "agent/transport/migration_channel.hpp"
#include "agent/vmm/dirty_bitmap.hpp"
#include "agent/vmm/guest_memory.hpp"
#include "common/background_worker.hpp"
#include "protocol/page_compression.hpp"
#include "protocol/page_digest.hpp"

#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

namespace ferry {

class page_sender {
public:
  struct options {
    bool detect_zero = true; // zero-page-detection legacy/multifd
    bool multifd = false;    // a multifd channel (counts multifd-bytes)
    thread_registry* threads = nullptr;
    mig::compression compress = mig::compression::none; // multifd-compression
    int level = 1;
    uint64_t xbzrle_cache = 0;            // xbzrle-cache-size; 0 without XBZRLE
    mig::memory_digest* digest = nullptr; // takes every page sent
    // zero-copy-send (multifd, plain, uncompressed): pages go straight from
    // guest RAM as live-pages records, no snapshot, the kernel reading them
    // while they leave; each sync first waits for the kernel to be done.
    bool zero_copy = false;
  };
  page_sender(const std::string& name, migration_channel& ch, const guest_memory& mem, options opt,
              rate_limiter& limiter, migration_counters& counters, std::atomic<bool>& stop,
              std::function<void(const caf::error&)> on_error);
  ~page_sender();
  page_sender(const page_sender&) = delete;
  page_sender& operator=(const page_sender&) = delete;

  // Queue work; blocks while the queue is full (back-pressure from the link).
  void push_pages(std::vector<uint64_t> pfns);
  void push_sync(uint64_t pass);
  void push_end();
  // Until every queued job is done (or dropped after a failure).
  void wait_idle();
  // Pages set here are known to be zero and are sent as such unread (the
  // first pass: holes of the RAM file); nullptr to read every page. Only
  // while the sender is idle.
  void set_known_zero(const dirty_bitmap* pages) { known_zero_ = pages; }
  // From the second pass on (as QEMU: the first pass fills no cache), pages
  // go through the XBZRLE cache of `bytes`; a new size starts an empty
  // cache. Only while the sender is idle, and only with options.xbzrle_cache.
  void use_xbzrle(uint64_t bytes);

private:
  struct job {
    enum class kind { pages, sync, end } what = kind::pages;
    std::vector<uint64_t> pfns;
    uint64_t pass = 0;
  };
  void push(job j);
  void run();
  caf::expected<void> send_pages(const std::vector<uint64_t>& pfns);
  caf::expected<void> send_live(const std::vector<uint64_t>& pfns);
  // Before a sync or the end: the kernel is done with every live page.
  caf::expected<void> flush_live();
  // How page `pfn` (its snapshot at `page`) goes with XBZRLE on.
  enum class xbzrle_outcome { whole, delta, unchanged };
  xbzrle_outcome xbzrle_page(uint64_t pfn, const uint8_t* page);

  migration_channel& ch_;
  const guest_memory& mem_;
  options opt_;
  rate_limiter& limiter_;
  migration_counters& counters_;
  std::atomic<bool>& stop_;
  std::function<void(const caf::error&)> on_error_;

  std::mutex mtx_; // queue_, busy_
  std::deque<job> queue_;
  bool busy_ = false;
  std::vector<uint8_t> data_;
  std::vector<uint64_t> entries_;
  std::vector<iovec> spans_;   // a batch's page data: guest RAM, or data_
  std::vector<iovec> parts_;   // a record's pieces: prefix, entries, spans_
  std::vector<iovec> live_;    // a live batch's pages, in guest RAM
  bool live_pending_ = false;  // live pages sent since the last flush
  std::vector<uint8_t> plain_; // a batch in one piece, for the compressor
  std::vector<uint8_t> compressed_;
  const dirty_bitmap* known_zero_ = nullptr;
  std::unique_ptr<xbzrle_cache> cache_;
  uint64_t cache_bytes_ = 0;
  std::vector<uint8_t> deltas_; // an XBZRLE record being built
  std::vector<uint8_t> delta_;  // one page's delta
  uint32_t delta_count_ = 0;
  // Last: stopped (and joined) before anything its loop uses goes away.
  background_worker worker_{mtx_};
};

} // namespace ferry
