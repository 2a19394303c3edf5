#include "agent/vmm/memory_layout.hpp"

#include <gtest/gtest.h>

using namespace ferry;

namespace {

// Every RAM byte except the reserved KVM pages is covered exactly once, and
// slots are in order, page aligned and capped.
void expect_covers(uint64_t ram) {
  const auto slots = plan_memory_slots(ram);
  uint64_t next = 0;
  for (size_t i = 0; i < slots.size(); ++i) {
    const auto& s = slots[i];
    EXPECT_EQ(s.slot, i);
    EXPECT_EQ(s.guest_phys, s.ram_offset) << "flat map";
    EXPECT_EQ(s.size % page_size, 0U);
    EXPECT_LE(s.size, max_slot_bytes);
    if (next == kvm_reserved_begin && s.guest_phys != next)
      next = kvm_reserved_end;
    EXPECT_EQ(s.guest_phys, next) << "slot " << i;
    EXPECT_FALSE(s.guest_phys < kvm_reserved_end && s.guest_phys + s.size > kvm_reserved_begin)
      << "slot " << i << " overlaps the KVM-reserved pages";
    next = s.guest_phys + s.size;
  }
  const uint64_t end = ram <= kvm_reserved_begin ? ram
                       : ram <= kvm_reserved_end ? kvm_reserved_begin
                                                 : ram;
  EXPECT_EQ(next, end) << "RAM inside the reserved pages is not mapped";
}

} // namespace

TEST(memory_layout, small_ram_is_one_slot) {
  const auto slots = plan_memory_slots(256u << 20);
  ASSERT_EQ(slots.size(), 1U);
  EXPECT_EQ(slots[0].size, 256u << 20);
}

TEST(memory_layout, large_ram_is_split_into_capped_slots) {
  const auto slots = plan_memory_slots(uint64_t{3} << 30);
  ASSERT_EQ(slots.size(), 3U);
  expect_covers(uint64_t{3} << 30);
}

TEST(memory_layout, ram_across_the_reserved_pages_leaves_a_hole) {
  for (uint64_t ram : {uint64_t{4} << 30, kvm_reserved_begin + page_size,
                       kvm_reserved_end + page_size, uint64_t{6} << 30, kvm_reserved_begin})
    expect_covers(ram);
}
