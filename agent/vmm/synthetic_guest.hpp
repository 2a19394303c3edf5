#pragma once
// The -accel none guest: RAM without a CPU. A named host thread ("dirtier")
// plays the test guest's part — it increments the counter of every page of a
// working set in address order, at a configured rate — and every write goes
// through the software dirty log. With a test-guest image it also keeps the
// image's pass counter in guest memory and reports passes on the serial port,
// as its KVM twin does, so tests and the demo read progress the same way on a
// machine without /dev/kvm.

#include "agent/vmm/guest.hpp"
#include "agent/vmm/serial_port.hpp"
#include "common/background_worker.hpp"

#include <atomic>
#include <functional>
#include <optional>

namespace ferry {

struct synthetic_guest_config {
  memory_backend memory;
  std::vector<uint8_t> boot_sector; // copied to 0x7c00 like a KVM guest's
  uint64_t ws_start = 1u << 20;     // guest-physical, page aligned
  uint64_t ws_pages = 64;
  uint64_t dirty_rate = 0; // pages per second; 0 = as fast as possible
  // Guest-physical u32 bumped after every pass (the test guest's status word);
  // none = no counter kept in memory.
  std::optional<uint64_t> pass_counter_address;
  uint32_t report_every = 0;   // passes between "pass NNNNNNNN" lines; 0 = never
  std::FILE* serial = nullptr; // owned by the guest afterwards
  // What the guest does once before it first dirties, on its own thread (the
  // test guest fills its pattern and says "ready"); skipped when CPU state was
  // loaded, as an incoming guest resumes where its source left off. Writes
  // to memory must be marked in the log.
  std::function<void(guest_memory&, software_dirty_log&, serial_port&)> boot;
};

class synthetic_guest final : public guest {
public:
  static caf::expected<std::unique_ptr<synthetic_guest>> create(synthetic_guest_config cfg);
  ~synthetic_guest() override;

  guest_memory& memory() override { return memory_; }
  software_dirty_log& host_writes() override { return log_; }
  dirty_tracker& dirty_log() override { return log_; }
  std::string accelerator() const override { return "none"; }
  serial_port* serial() override { return &serial_; }
  caf::expected<std::vector<uint8_t>> save_cpu_state() override;
  caf::expected<void> load_cpu_state(std::span<const uint8_t> blob) override;

  uint64_t passes() const { return passes_.load(); }
  // The dirtier plays the one vCPU.
  std::vector<int> vcpu_thread_ids() const override { return {dirtier_tid_.load()}; }

protected:
  caf::expected<void> do_start(bool paused) override;
  void do_pause() override;
  void do_resume() override;
  run_state execution_state() const override { return run_state::running; }

private:
  explicit synthetic_guest(guest_memory mem, synthetic_guest_config cfg);
  void loop();
  void end_pass();

  guest_memory memory_;
  software_dirty_log log_;
  synthetic_guest_config cfg_;
  std::mutex mtx_;
  bool started_ = false;
  bool pause_req_ = false;
  bool parked_ = true;
  uint64_t next_ = 0; // index into the working set of the next page to bump
  bool booted_ = false;
  std::atomic<uint64_t> passes_{0};
  std::atomic<int> dirtier_tid_{0};
  serial_port serial_;
  // Last: stopped (and joined) before anything its loop uses goes away.
  background_worker worker_{mtx_};
};

} // namespace ferry
