#pragma once
// Everything KVM holds for one x86 vCPU, and its versioned wire form.
//
// Blob layout (little-endian):
//   u32 magic "FVCP" | u16 version | u16 section count
//   then per section: u16 id | u16 reserved (0) | u32 length | payload
// Sections: 1 regs, 2 sregs, 3 xsave, 4 xcrs, 5 msrs (u32 n, then n x
// {u32 index, u32 reserved, u64 value}), 6 vcpu events, 7 debug registers,
// 8 mp state. Every section must appear exactly once. The reader treats the
// blob as untrusted input: it checks every length before copying.

#include <caf/expected.hpp>

#include "agent/vmm/kvm/kvm_abi.hpp"

#include <cstdint>
#include <span>
#include <vector>

namespace ferry {

struct vcpu_state {
  static constexpr uint32_t magic = 0x50435646; // "FVCP"
  static constexpr uint16_t version = 1;

  kvm_regs regs{};
  kvm_sregs sregs{};
  std::vector<uint8_t> xsave; // KVM_GET_XSAVE(2) area, size per the host
  kvm_xcrs xcrs{};
  std::vector<kvm_msr_entry> msrs;
  kvm_vcpu_events events{};
  kvm_debugregs debugregs{};
  kvm_mp_state mp_state{};

  std::vector<uint8_t> serialize() const;
  static caf::expected<vcpu_state> deserialize(std::span<const uint8_t> blob);
};

} // namespace ferry
