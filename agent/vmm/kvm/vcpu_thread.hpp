#pragma once
// The named thread ("vcpuN") that runs one vCPU, and the only place that
// knows how to get it out of KVM_RUN: pause() sets immediate_exit and kicks
// the thread with SIGUSR1, then waits until the thread has parked. A parked
// vCPU has completed any pending I/O (KVM re-entered with immediate_exit), so
// its state may be saved.

#include "agent/vmm/kvm/vcpu.hpp"
#include "common/background_worker.hpp"

#include <pthread.h>

#include <atomic>
#include <functional>
#include <mutex>

namespace ferry {

class vcpu_thread {
public:
  enum class activity { running, halted, shutdown, failed };

  // `on_stop` runs on the vCPU thread when the vCPU halts, shuts down or fails.
  vcpu_thread(vcpu& cpu, std::function<void(vcpu_thread&, vcpu_exit)> on_stop);
  ~vcpu_thread();
  vcpu_thread(const vcpu_thread&) = delete;
  vcpu_thread& operator=(const vcpu_thread&) = delete;

  // Starts the thread; it parks at once if paused or not runnable.
  void start(bool paused);
  void pause();
  void resume();
  // The dirty limit's brake: a held vCPU stays out of KVM_RUN until released,
  // independently of pause()/resume(). Does not wait for the vCPU to park.
  void hold(bool on);
  // A halted, failed or not-yet-started vCPU becomes runnable (after restore).
  void set_activity(activity a);
  activity current() const;
  bool parked() const;
  vcpu& cpu() { return cpu_; }
  // The thread's kernel id once it runs (0 before).
  int thread_id() const { return tid_.load(); }

private:
  void loop();
  // With mtx_ held: gets a running vCPU out of KVM_RUN.
  void kick();

  vcpu& cpu_;
  std::function<void(vcpu_thread&, vcpu_exit)> on_stop_;
  mutable std::mutex mtx_;
  bool started_ = false;
  pthread_t self_{}; // the vCPU thread, set before it first leaves parked_
  std::atomic<int> tid_{0};
  bool pause_req_ = false;
  bool hold_ = false;
  bool parked_ = true;
  activity activity_ = activity::running;
  // Last: stopped (and joined) before anything its loop uses goes away.
  background_worker worker_{mtx_};
};

} // namespace ferry
