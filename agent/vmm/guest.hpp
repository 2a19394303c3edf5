#pragma once
// What the rest of the agent (QMP, migration) sees of a guest, whatever runs
// it: KVM vCPUs (kvm_guest) or a host thread dirtying memory (synthetic_guest,
// -accel none).

#include "agent/vmm/dirty_tracker.hpp"
#include "agent/vmm/guest_memory.hpp"
#include "agent/vmm/serial_port.hpp"
#include "agent/vmm/software_dirty_log.hpp"

#include <caf/expected.hpp>

#include <cstdint>
#include <mutex>
#include <span>
#include <string>
#include <vector>

namespace ferry {

class kvm_dirty_ring;

// QEMU's RunState names for the states a guest of ours can be in.
enum class run_state { prelaunch, running, paused, shutdown, internal_error };
const char* to_string(run_state s);

class guest {
public:
  // While alive the guest's CPUs (or dirtier) are out of guest code. Guards
  // nest: the guest runs again when the last one is gone, if it was running.
  class pause_guard {
  public:
    pause_guard() = default;
    explicit pause_guard(guest* g) : g_(g) {}
    pause_guard(pause_guard&& o) noexcept : g_(std::exchange(o.g_, nullptr)) {}
    pause_guard& operator=(pause_guard&& o) noexcept {
      if (this != &o) {
        release();
        g_ = std::exchange(o.g_, nullptr);
      }
      return *this;
    }
    pause_guard(const pause_guard&) = delete;
    pause_guard& operator=(const pause_guard&) = delete;
    ~pause_guard() { release(); }
    explicit operator bool() const { return g_ != nullptr; }

  private:
    void release() {
      if (g_ != nullptr)
        std::exchange(g_, nullptr)->unpause();
    }
    guest* g_ = nullptr;
  };

  virtual ~guest() = default;

  virtual guest_memory& memory() = 0;
  // Writes the agent makes into guest RAM must be marked here.
  virtual software_dirty_log& host_writes() = 0;
  // Every page written by the guest or the agent (see dirty_tracker).
  virtual dirty_tracker& dirty_log() = 0;
  // KVM's per-vCPU dirty rings when the guest runs with them (-accel
  // kvm,dirty-ring-size=N), else nullptr.
  virtual kvm_dirty_ring* dirty_ring() { return nullptr; }
  // vCPUs, and holding one out of execution (the dirty limit's brake).
  virtual uint32_t vcpu_count() const { return 0; }
  // The kernel's thread id of each thread that runs guest instructions (a
  // vCPU; the -accel none dirtier), in vCPU order; 0 for one not started.
  virtual std::vector<int> vcpu_thread_ids() const { return {}; }
  virtual void hold_vcpu(uint32_t /*index*/, bool /*hold*/) {}
  // The guest's serial port (output commit holds it back), if it has one.
  virtual serial_port* serial() { return nullptr; }
  virtual std::string accelerator() const = 0;

  // Leaves prelaunch: the guest starts executing (unless paused).
  caf::expected<void> start();
  pause_guard pause();
  // Stops the guest for good (the agent is quitting): no pause released
  // later lets it run again. A stale copy whose RAM is a shared file must
  // not write into it once another agent owns the guest.
  void halt();
  run_state state() const;

  // CPU state of a paused guest as a versioned blob, and back.
  virtual caf::expected<std::vector<uint8_t>> save_cpu_state() = 0;
  virtual caf::expected<void> load_cpu_state(std::span<const uint8_t> blob) = 0;

protected:
  virtual caf::expected<void> do_start(bool paused) = 0;
  virtual void do_pause() = 0;
  virtual void do_resume() = 0;
  // shutdown / internal_error when the guest stopped by itself, else running.
  virtual run_state execution_state() const = 0;

private:
  void unpause();

  mutable std::mutex mtx_;
  bool started_ = false;
  int pauses_ = 0;
  bool halted_ = false; // halt() holds one pause that is never released
};

} // namespace ferry
