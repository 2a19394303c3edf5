#pragma once
// The test guest's boot image and its parameter block.
//
// The block sits at a fixed offset of the 512-byte boot sector; since the
// sector is loaded at guest-physical 0x7c00, a memory dump carries its own
// parameters at 0x7c00 + param_offset — the verifier reads them from there.

#include <caf/expected.hpp>

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace ferry::testguest {

inline constexpr uint64_t boot_address = 0x7c00;
inline constexpr size_t sector_bytes = 512;
inline constexpr size_t param_offset = 0x1d8;
inline constexpr uint32_t param_magic = 0x50475446; // "FTGP"
inline constexpr uint32_t param_version = 1;
// Pattern and working set must stay below the KVM-reserved pages and inside
// what 32-bit protected mode addresses.
inline constexpr uint64_t max_ram_top = 0xfeffc000;
// Guest-physical address of the guest's status words (pass count, phase).
inline constexpr uint64_t status_address = 0x6000;

struct guest_params {
  uint32_t ram_top = 16u << 20;
  uint32_t pattern_start = 1u << 20;
  uint32_t ws_start = 1u << 20;
  uint32_t ws_pages = 64;
  uint32_t pace = 0; // busy-loop iterations after each page increment
  uint32_t seed = 0x5eed;
  uint32_t report_every = 1000; // passes between serial reports; 0 = never

  // Reasons the parameters cannot describe a working guest, or nothing.
  caf::expected<void> validate() const;
  friend bool operator==(const guest_params&, const guest_params&) = default;
};

// Reads the block from a boot sector (or from guest RAM at boot_address).
caf::expected<guest_params> read_params(std::span<const uint8_t> sector);
// Writes the block into a boot sector, after validating it.
caf::expected<void> write_params(std::span<uint8_t> sector, const guest_params& p);

// The assembled boot sector built into this binary (counter_guest.S).
std::span<const uint8_t> builtin_image();

} // namespace ferry::testguest
