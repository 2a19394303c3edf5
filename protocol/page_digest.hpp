#pragma once
// The switchover digest: an order-independent, incremental fingerprint of
// guest memory as the migration stream carries it. Each page contributes
// mix(index, hash of its content); the digest is the sum of the
// contributions (mod 2^64), so pages may arrive in any order and on any
// channel, and a page sent again replaces its old contribution. Both sides
// keep one (the source over what it sent, the destination over what it
// applied, read back from guest memory); at switchover the destination
// compares and refuses to take the guest on a mismatch.

#include <atomic>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

namespace ferry::mig {

// How a destination's refusal begins when the digests differ; it reaches the
// source's error-desc, where the orchestrator counts refusals by it.
inline constexpr std::string_view digest_mismatch_phrase = "switchover digest mismatch";

// A 64-bit hash of one 4 KiB page, XXH3 (not cryptographic: it catches torn,
// lost, misplaced or corrupted pages, not an adversary).
uint64_t page_hash(const uint8_t* page);
// The hash of an all-zero page (computed once).
uint64_t zero_page_hash();
// What page `pfn` with content hash `h` adds to the digest.
uint64_t page_contribution(uint64_t pfn, uint64_t h);

class memory_digest {
public:
  explicit memory_digest(uint64_t pages) : per_page_(pages) {}
  // Page `pfn` now holds content hashed `h`. Threads may set distinct
  // pages at once.
  void set(uint64_t pfn, uint64_t h) {
    const uint64_t c = page_contribution(pfn, h) | 1; // 0 = never set
    const uint64_t old = per_page_[pfn].exchange(c, std::memory_order_relaxed);
    sum_.fetch_add(c - old, std::memory_order_relaxed);
  }
  // Page `pfn` no longer counts (postcopy: both sides leave out the pages
  // still to come, whose copies in flight may have been torn by the
  // running guest; each of those is checked on its own when it arrives).
  void forget(uint64_t pfn) {
    const uint64_t old = per_page_[pfn].exchange(0, std::memory_order_relaxed);
    sum_.fetch_sub(old, std::memory_order_relaxed);
  }
  uint64_t value() const { return sum_.load(std::memory_order_relaxed); }

private:
  std::vector<std::atomic<uint64_t>> per_page_;
  std::atomic<uint64_t> sum_{0};
};

} // namespace ferry::mig
