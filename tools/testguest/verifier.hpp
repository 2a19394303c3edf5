#pragma once
// Proves a test guest's memory consistent: the pattern intact on every page of
// [pattern_start, ram_top), and the working-set counters in step — each
// counter equals its predecessor's or is one lower, with at most one step down
// across the set (the guest increments pages in address order, so a snapshot
// holds one "wave front"). Any lost, stale or corrupted page breaks one of
// these rules.

#include "agent/testguest/guest_image.hpp"

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace ferry::testguest {

struct verify_report {
  bool consistent = false;
  guest_params params;
  uint64_t pattern_pages = 0; // pages checked against the pattern
  uint64_t bad_pages = 0;     // pattern mismatches
  uint32_t counter_min = 0;
  uint32_t counter_max = 0;
  uint64_t step_downs = 0;           // places where a counter is one below its predecessor
  uint32_t vcpus = 1;                // working sets checked (one per vCPU)
  std::vector<std::string> problems; // the first few, human-readable

  std::string summary() const;
};

// `memory` is guest RAM from guest-physical 0 (a pmemsave dump of all RAM or
// the memfd). Parameters come from the parameter block at 0x7c00 unless given.
// A guest run with -smp N has N working sets, vCPU i's the i-th after
// ws_start (as far as RAM reaches); each is checked on its own, and
// counter_min/max and step_downs describe the boot processor's.
verify_report verify(std::span<const uint8_t> memory,
                     std::optional<guest_params> params = std::nullopt, uint32_t vcpus = 1);

} // namespace ferry::testguest
