#pragma once
// Where guest RAM goes in guest-physical space, and how it is cut into KVM
// memory slots. Pure arithmetic, no KVM: unit-tested on its own.

#include <cstddef>
#include <cstdint>
#include <vector>

namespace ferry {

inline constexpr uint64_t page_size = 4096;

// Guest-physical pages KVM needs for itself on x86 (real-mode TSS, three pages,
// and the EPT identity map, one page). They sit just below the 4 GiB BIOS
// area, as in QEMU, and must never be backed by a RAM slot.
inline constexpr uint64_t kvm_identity_map_addr = 0xfeffc000;
inline constexpr uint64_t kvm_tss_addr = 0xfeffd000;
inline constexpr uint64_t kvm_reserved_begin = kvm_identity_map_addr;
inline constexpr uint64_t kvm_reserved_end = kvm_tss_addr + 3 * page_size;

// Where a PC BIOS loads the boot sector (and where the boot vCPU starts), and
// the most a boot sector holds.
inline constexpr uint64_t boot_sector_address = 0x7c00;
inline constexpr size_t boot_sector_max_bytes = 512;

// Slots are capped so one slot's dirty bitmap stays small enough to fetch and
// clear in one ioctl quickly; the cap is a multiple of 64 pages as
// KVM_CLEAR_DIRTY_LOG requires.
inline constexpr uint64_t max_slot_bytes = uint64_t{1} << 30;

struct memory_slot {
  uint32_t slot = 0;
  uint64_t guest_phys = 0; // guest-physical start
  uint64_t ram_offset = 0; // offset into the RAM backing
  uint64_t size = 0;       // bytes, a multiple of page_size
};

// Flat RAM from guest-physical 0 to `ram_size`, minus the reserved KVM pages,
// as slots of at most max_slot_bytes. `ram_size` must be a multiple of
// page_size. Guest-physical address == RAM offset for every slot (flat map).
std::vector<memory_slot> plan_memory_slots(uint64_t ram_size);

} // namespace ferry
