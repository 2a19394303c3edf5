#pragma once
// The q-quantile (0..1) of figures sorted ascending, nearest rank: the
// engines' latency and pause summaries on stderr. 0 for none.

#include <algorithm>
#include <cstdint>
#include <vector>

namespace ferry {

inline uint32_t percentile(const std::vector<uint32_t>& sorted, double q) {
  if (sorted.empty())
    return 0;
  return sorted[std::min(sorted.size() - 1,
                         static_cast<size_t>(q * static_cast<double>(sorted.size())))];
}

} // namespace ferry
