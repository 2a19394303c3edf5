#pragma once
// CRC-32C (Castagnoli), the per-record checksum of the migration stream.
// Uses the SSE4.2 instruction when the CPU has it: the checksum runs over
// every byte of guest RAM sent, so it must stay far above link speed.

#include <cstddef>
#include <cstdint>
#include <span>

namespace ferry {

// Continues `crc` (0 to start) over `data`.
uint32_t crc32c(uint32_t crc, std::span<const uint8_t> data);

} // namespace ferry
