#pragma once
// A COLO secondary's staging area: the pages and CPU state of the checkpoint
// in flight are kept apart from the guest until the checkpoint is whole, then
// committed in one step. The secondary's copy of the guest is therefore
// always one complete checkpoint — a checkpoint cut off mid-transfer (the
// primary killed, the link reset) is dropped and leaves the previous one.
//
// Bounded: a checkpoint cannot stage more distinct pages than RAM holds, and
// every page index is checked against RAM before anything is kept. A page
// staged twice in one checkpoint keeps its last contents in the same slot.

#include <caf/expected.hpp>

#include <cstdint>
#include <functional>
#include <span>
#include <unordered_map>
#include <vector>

namespace ferry {

class checkpoint_staging {
public:
  explicit checkpoint_staging(uint64_t ram_pages);

  // Empties the area for checkpoint `number`.
  void begin(uint64_t number);
  uint64_t number() const { return number_; }

  // One page of the checkpoint: 4096 bytes, or empty for a zero page.
  caf::expected<void> stage_page(uint64_t pfn, std::span<const uint8_t> data);
  // The vCPUs' state blob (guest::save_cpu_state's form).
  void stage_cpu_state(std::vector<uint8_t> blob);

  size_t staged_pages() const { return index_.size(); }
  // Every staged page as it will be committed: its data, or empty for a
  // zero page.
  void
  for_each_page(const std::function<void(uint64_t pfn, std::span<const uint8_t> data)>& f) const;
  size_t staged_bytes() const { return data_.size(); } // page data kept: at most RAM's size
  bool has_cpu_state() const { return has_cpu_; }

  // Writes every staged page into `ram` (the guest's, `ram_pages` pages) and
  // hands back the CPU state for the caller to load; the area is empty
  // after. Refused, touching nothing, without a CPU state: a checkpoint
  // without one is not whole.
  caf::expected<std::vector<uint8_t>> commit(std::span<uint8_t> ram);

  // Drops the checkpoint in flight.
  void discard();

private:
  uint64_t ram_pages_;
  uint64_t number_ = 0;
  struct staged {
    size_t at; // offset in data_ (SIZE_MAX: none yet)
    bool zero;
  };
  std::unordered_map<uint64_t, staged> index_;
  std::vector<uint8_t> data_;
  std::vector<uint8_t> cpu_;
  bool has_cpu_ = false;
};

} // namespace ferry
