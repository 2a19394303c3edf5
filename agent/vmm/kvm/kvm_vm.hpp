#pragma once
// A KVM virtual machine: the /dev/kvm handle, the VM fd, and guest RAM
// registered as memory slots. vCPUs and dirty trackers are built on top.

#include "agent/vmm/guest_memory.hpp"
#include "agent/vmm/memory_layout.hpp"
#include "common/unique_fd.hpp"

#include <caf/expected.hpp>

#include "agent/vmm/kvm/kvm_abi.hpp"

#include <memory>
#include <vector>

namespace ferry {

enum class dirty_log_kind {
  bitmap, // KVM_GET_DIRTY_LOG + KVM_CLEAR_DIRTY_LOG, manual protect
  ring,   // per-vCPU dirty rings (must be chosen before vCPUs exist)
};

struct kvm_vm_options {
  dirty_log_kind dirty_log = dirty_log_kind::bitmap;
  uint32_t dirty_ring_entries = 4096; // ring only: a power of two
};

// Whether this process can open /dev/kvm; a reason when it cannot.
caf::expected<void> kvm_available();

class kvm_vm {
public:
  static caf::expected<std::unique_ptr<kvm_vm>> create(const guest_memory& mem,
                                                       const kvm_vm_options& opts);

  int fd() const { return vm_.get(); }
  int kvm_fd() const { return kvm_.get(); }
  const guest_memory& memory() const { return *mem_; }
  const std::vector<memory_slot>& slots() const { return slots_; }
  const kvm_vm_options& options() const { return opts_; }
  size_t vcpu_mmap_size() const { return vcpu_mmap_size_; }
  // Supported CPUID (KVM_GET_SUPPORTED_CPUID), fetched once.
  const std::vector<uint8_t>& supported_cpuid() const { return cpuid_; }
  // MSRs the host can save and restore for a vCPU.
  const std::vector<uint32_t>& msr_indices() const { return msrs_; }
  // Bytes of the XSAVE area (KVM_CAP_XSAVE2), at least sizeof(kvm_xsave).
  size_t xsave_size() const { return xsave_size_; }

  // Turns KVM's dirty logging on or off for every RAM slot.
  caf::expected<void> set_dirty_logging(bool on);

  int check_extension(long cap) const;

private:
  kvm_vm() = default;
  caf::expected<void> set_slot(const memory_slot& s, bool log_dirty);

  unique_fd kvm_;
  unique_fd vm_;
  const guest_memory* mem_ = nullptr;
  kvm_vm_options opts_;
  std::vector<memory_slot> slots_;
  size_t vcpu_mmap_size_ = 0;
  std::vector<uint8_t> cpuid_;
  std::vector<uint32_t> msrs_;
  size_t xsave_size_ = 0;
};

} // namespace ferry
