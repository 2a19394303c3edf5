#include "agent/vmm/kvm/vcpu_thread.hpp"

#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <mutex>
#include <string>

namespace ferry {

namespace {

// The kick signal only has to interrupt KVM_RUN; the handler does nothing.
// Installed without SA_RESTART so the ioctl returns EINTR.
void install_kick_handler() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction sa {};
    sa.sa_handler = [](int) {};
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;
    ::sigaction(SIGUSR1, &sa, nullptr);
  });
}

} // namespace

vcpu_thread::vcpu_thread(vcpu& cpu, std::function<void(vcpu_thread&, vcpu_exit)> on_stop)
  : cpu_(cpu), on_stop_(std::move(on_stop)) {
  install_kick_handler();
}

vcpu_thread::~vcpu_thread() {
  worker_.stop([this] { kick(); });
}

void vcpu_thread::kick() {
  // parked_ is true until the thread has set self_, and again before it
  // ends: a parked vCPU is never in KVM_RUN and needs no signal.
  if (started_ && !parked_) {
    cpu_.request_immediate_exit();
    ::pthread_kill(self_, SIGUSR1);
  }
}

void vcpu_thread::start(bool paused) {
  {
    std::lock_guard lk{mtx_};
    pause_req_ = paused;
    started_ = true;
  }
  worker_.start("vcpu" + std::to_string(cpu_.index()), [this] { loop(); });
}

void vcpu_thread::loop() {
  std::unique_lock lk{mtx_};
  self_ = ::pthread_self();
  tid_ = static_cast<int>(::gettid());
  // After a port-I/O or MMIO exit the instruction is only complete once KVM_RUN
  // is entered again; a pause then re-enters once with immediate_exit set so
  // the saved state never holds a half-done IN.
  bool io_pending = false;
  for (;;) {
    const bool stopping = pause_req_ || hold_;
    const bool complete_io = stopping && io_pending && !worker_.stopping();
    while (!complete_io && (pause_req_ || hold_ || activity_ != activity::running) &&
           !worker_.stopping()) {
      parked_ = true;
      worker_.wake();
      worker_.wait(lk);
    }
    if (worker_.stopping())
      break;
    parked_ = false;
    // Set or cleared under the lock: a pause() after this point sets it
    // again before kicking, so the kick cannot be lost.
    if (complete_io)
      cpu_.request_immediate_exit();
    else
      cpu_.clear_immediate_exit();
    lk.unlock();
    const vcpu_exit ex = cpu_.run_once();
    lk.lock();
    io_pending = ex == vcpu_exit::handled;
    switch (ex) {
      case vcpu_exit::handled:
      case vcpu_exit::interrupted:
        continue;
      case vcpu_exit::halted:
        activity_ = activity::halted;
        break;
      case vcpu_exit::shutdown:
        activity_ = activity::shutdown;
        break;
      case vcpu_exit::failed:
        activity_ = activity::failed;
        break;
    }
    if (on_stop_) {
      lk.unlock();
      on_stop_(*this, ex);
      lk.lock();
    }
  }
  parked_ = true;
  worker_.wake();
}

void vcpu_thread::pause() {
  std::unique_lock lk{mtx_};
  pause_req_ = true;
  if (!started_)
    return;
  kick();
  worker_.wait(lk, [this] { return parked_; });
}

void vcpu_thread::resume() {
  std::lock_guard lk{mtx_};
  pause_req_ = false;
  worker_.wake();
}

void vcpu_thread::hold(bool on) {
  std::lock_guard lk{mtx_};
  hold_ = on;
  if (on)
    kick();
  worker_.wake();
}

void vcpu_thread::set_activity(activity a) {
  std::lock_guard lk{mtx_};
  activity_ = a;
  worker_.wake();
}

vcpu_thread::activity vcpu_thread::current() const {
  std::lock_guard lk{mtx_};
  return activity_;
}

bool vcpu_thread::parked() const {
  std::lock_guard lk{mtx_};
  return parked_;
}

} // namespace ferry
