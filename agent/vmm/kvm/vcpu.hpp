#pragma once
// One KVM vCPU: its fd, its kvm_run area, its optional dirty ring, and the
// exits it handles itself (port I/O, MMIO). Not thread-aware: vcpu_thread
// owns the loop, pausing and kicking.

#include "agent/vmm/kvm/kvm_vm.hpp"
#include "agent/vmm/kvm/vcpu_state.hpp"
#include "agent/vmm/platform_io.hpp"
#include "common/unique_fd.hpp"

#include <caf/expected.hpp>

#include <memory>

namespace ferry {

class kvm_dirty_ring;

enum class vcpu_exit {
  handled,     // port I/O or MMIO served; run again
  interrupted, // KVM_RUN returned EINTR (a kick)
  halted,      // HLT with no interrupt controller to wake it
  shutdown,    // triple fault or reset request
  failed,      // entry failure or internal error; details in last_error()
};

class vcpu {
public:
  static caf::expected<std::unique_ptr<vcpu>> create(kvm_vm& vm, uint32_t index, platform_io& io,
                                                     kvm_dirty_ring* ring);
  ~vcpu();
  vcpu(const vcpu&) = delete;
  vcpu& operator=(const vcpu&) = delete;

  uint32_t index() const { return index_; }

  // Power-on state of a PC whose BIOS jumps to the boot sector: real mode,
  // flat segments at 0, CS:IP = 0:`ip`, DL = boot drive 0x80.
  caf::expected<void> reset_real_mode(uint16_t ip);

  caf::expected<vcpu_state> save() const;
  caf::expected<void> restore(const vcpu_state& st);

  caf::expected<kvm_regs> regs() const;
  caf::expected<void> set_regs(const kvm_regs& r);

  // Enters the guest on the calling thread; returns when userspace has to
  // decide something. Never called concurrently for one vCPU.
  vcpu_exit run_once();

  // Async-signal-safe half of a kick: makes the next KVM_RUN return at once.
  void request_immediate_exit() { __atomic_store_n(&run_->immediate_exit, 1, __ATOMIC_SEQ_CST); }
  void clear_immediate_exit() { __atomic_store_n(&run_->immediate_exit, 0, __ATOMIC_SEQ_CST); }

  const std::string& last_error() const { return last_error_; }

private:
  vcpu(kvm_vm& vm, uint32_t index, platform_io& io, kvm_dirty_ring* ring)
    : vm_(vm), index_(index), io_(io), ring_(ring) {}
  caf::expected<void> setup_cpuid();
  caf::expected<void> probe_msrs();

  kvm_vm& vm_;
  uint32_t index_;
  platform_io& io_;
  kvm_dirty_ring* ring_;
  unique_fd fd_;
  kvm_run* run_ = nullptr;
  void* ring_map_ = nullptr;
  size_t ring_bytes_ = 0;
  std::vector<uint32_t> msrs_; // the MSRs this vCPU can save and restore
  std::string last_error_;
};

} // namespace ferry
