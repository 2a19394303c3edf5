#pragma once
// x-ignore-shared leaves guest RAM out of the stream: both agents map the
// same shared file. Nothing on the wire would show a destination mapping
// another file (a wrong path after a host reboot, a stale copy), so the
// source, with its guest stopped, sends the hashes of pages spread evenly
// over RAM, and the destination compares them with what it maps before
// its guest may run. A sample, not a proof: it costs microseconds whatever
// the RAM size, and a different file differs nearly everywhere.
//
//   shared-ram: u32 count (1 .. max_shared_samples), u32 reserved (0),
//               then count × (u64 page index, u64 page_hash of the page),
//               indexes strictly increasing, each inside RAM.

#include <caf/expected.hpp>

#include <cstdint>
#include <span>
#include <vector>

namespace ferry::mig {

inline constexpr uint32_t max_shared_samples = 1024;

struct shared_page_sample {
  uint64_t pfn = 0;
  uint64_t hash = 0;
  bool operator==(const shared_page_sample&) const = default;
};

// The pages a source samples from RAM of `ram_pages` pages: the first, the
// last and evenly spaced ones between, at most max_shared_samples.
std::vector<uint64_t> shared_sample_pages(uint64_t ram_pages);

std::vector<uint8_t> encode_shared_ram(std::span<const shared_page_sample> samples);
// Refuses a count out of range, a length that disagrees with it, a page
// outside `ram_pages` and indexes out of order.
caf::expected<std::vector<shared_page_sample>> decode_shared_ram(std::span<const uint8_t> payload,
                                                                 uint64_t ram_pages);

} // namespace ferry::mig
