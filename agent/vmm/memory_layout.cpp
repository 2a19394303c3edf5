#include "agent/vmm/memory_layout.hpp"

#include <algorithm>

namespace ferry {

namespace {

void add_range(std::vector<memory_slot>& out, uint64_t begin, uint64_t end) {
  while (begin < end) {
    const uint64_t len = std::min(end - begin, max_slot_bytes);
    out.push_back({static_cast<uint32_t>(out.size()), begin, begin, len});
    begin += len;
  }
}

} // namespace

std::vector<memory_slot> plan_memory_slots(uint64_t ram_size) {
  std::vector<memory_slot> slots;
  if (ram_size <= kvm_reserved_begin) {
    add_range(slots, 0, ram_size);
    return slots;
  }
  add_range(slots, 0, kvm_reserved_begin);
  // RAM under the reserved pages stays unmapped for the guest: it is a hole,
  // not lost RAM we could hand out elsewhere (the layout is flat).
  if (ram_size > kvm_reserved_end)
    add_range(slots, kvm_reserved_end, ram_size);
  return slots;
}

} // namespace ferry
