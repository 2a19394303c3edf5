#pragma once
// A guest run by KVM: memfd RAM in slots, vCPU threads, the PC-ish platform
// (serial, port 0x92) and the dirty trackers (KVM bitmap or ring, plus the
// software log for the agent's own writes).

#include "agent/vmm/guest.hpp"
#include "agent/vmm/kvm/kvm_vm.hpp"
#include "agent/vmm/platform_io.hpp"

#include <cstdio>
#include <memory>

namespace ferry {

class kvm_dirty_bitmap;
class kvm_dirty_ring;
class vcpu;
class vcpu_thread;

struct kvm_guest_config {
  memory_backend memory;
  uint32_t vcpus = 1;
  // Loaded at 0x7c00, where vCPU 0 starts in real mode (at most 512 bytes).
  std::vector<uint8_t> boot_sector;
  std::FILE* serial = nullptr; // owned by the guest afterwards
  kvm_vm_options kvm;
};

class kvm_guest final : public guest {
public:
  static caf::expected<std::unique_ptr<kvm_guest>> create(kvm_guest_config cfg);
  ~kvm_guest() override;

  guest_memory& memory() override { return memory_; }
  software_dirty_log& host_writes() override { return host_writes_; }
  dirty_tracker& dirty_log() override { return *union_; }
  kvm_dirty_ring* dirty_ring() override { return ring_.get(); }
  uint32_t vcpu_count() const override { return static_cast<uint32_t>(threads_.size()); }
  std::vector<int> vcpu_thread_ids() const override;
  void hold_vcpu(uint32_t index, bool hold) override;
  std::string accelerator() const override { return "kvm"; }
  caf::expected<std::vector<uint8_t>> save_cpu_state() override;
  caf::expected<void> load_cpu_state(std::span<const uint8_t> blob) override;

  platform_io& io() { return *io_; }
  serial_port* serial() override { return &io_->serial(); }
  // The accelerator's own tracker alone (no software log), for tests.
  dirty_tracker& kvm_dirty_tracker();
  vcpu& cpu(size_t i);
  size_t cpu_count() const;
  // Why the guest stopped by itself (shutdown or KVM failure), if it did.
  std::string stop_reason() const;

protected:
  caf::expected<void> do_start(bool paused) override;
  void do_pause() override;
  void do_resume() override;
  run_state execution_state() const override;

private:
  explicit kvm_guest(guest_memory mem);

  guest_memory memory_;
  software_dirty_log host_writes_;
  std::unique_ptr<kvm_vm> vm_;
  std::unique_ptr<platform_io> io_;
  std::unique_ptr<kvm_dirty_bitmap> bitmap_;
  std::unique_ptr<kvm_dirty_ring> ring_;
  std::unique_ptr<union_dirty_tracker> union_;
  std::vector<std::unique_ptr<vcpu>> cpus_;
  std::vector<std::unique_ptr<vcpu_thread>> threads_;
  mutable std::mutex stop_mtx_;
  run_state stopped_ = run_state::running;
  std::string stop_reason_;
};

} // namespace ferry
