#pragma once
// A named thread running one loop until its owner stops it: the thread, the
// condition variable it sleeps on and the stop flag, with the owner's mutex
// (which also guards the owner's state the loop reads). Replaces the
// hand-written thread + condition variable + quit flag of each loop.
//
//   worker_.start("dirty-reaper", [this] { loop(); });
//   void loop() {
//     std::unique_lock lk{mtx_};
//     while (!worker_.stopping()) { ...; worker_.wait_for(lk, period); }
//   }

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

namespace ferry {

class background_worker {
public:
  explicit background_worker(std::mutex& mtx) : mtx_(mtx) {}
  ~background_worker() { stop(); }
  background_worker(const background_worker&) = delete;
  background_worker& operator=(const background_worker&) = delete;

  // Runs `loop` on a new thread named `name` (Linux keeps 15 characters).
  // A worker that ran before is joined first and may run again.
  void start(std::string name, std::function<void()> loop);
  // stopping() turns true, every wait ends, the thread is joined. Call it
  // without holding the mutex; calling it again does nothing.
  void stop() { stop({}); }
  // The same for a loop that may be blocked outside the condition variable
  // (a vCPU in KVM_RUN): `interrupt` runs with the mutex held, after
  // stopping() turned true, so the loop cannot block again after it.
  void stop(const std::function<void()>& interrupt);
  // Ends the loop's current wait early (the owner changed its state).
  void wake() { cv_.notify_all(); }

  // With the mutex held.
  bool stopping() const { return quit_; }
  // With `lk` holding the mutex: sleeps until woken, stopped or (for the
  // timed ones) the time comes. False once stopping. The timed ones without
  // a predicate sleep out their time even when woken (only stopping ends
  // them early): a period, not a wait for news — pass `ready` for that.
  bool wait(std::unique_lock<std::mutex>& lk) {
    if (!quit_)
      cv_.wait(lk);
    return !quit_;
  }
  template <class Rep, class Period>
  bool wait_for(std::unique_lock<std::mutex>& lk, std::chrono::duration<Rep, Period> d) {
    cv_.wait_for(lk, d, [this] { return quit_; });
    return !quit_;
  }
  template <class Clock, class Duration>
  bool wait_until(std::unique_lock<std::mutex>& lk, std::chrono::time_point<Clock, Duration> t) {
    cv_.wait_until(lk, t, [this] { return quit_; });
    return !quit_;
  }
  // The same, ending early once `ready()` holds as well.
  template <class Pred>
  bool wait(std::unique_lock<std::mutex>& lk, Pred ready) {
    cv_.wait(lk, [&] { return quit_ || ready(); });
    return !quit_;
  }
  template <class Clock, class Duration, class Pred>
  bool wait_until(std::unique_lock<std::mutex>& lk, std::chrono::time_point<Clock, Duration> t,
                  Pred ready) {
    cv_.wait_until(lk, t, [&] { return quit_ || ready(); });
    return !quit_;
  }
  template <class Rep, class Period, class Pred>
  bool wait_for(std::unique_lock<std::mutex>& lk, std::chrono::duration<Rep, Period> d,
                Pred ready) {
    cv_.wait_for(lk, d, [&] { return quit_ || ready(); });
    return !quit_;
  }

private:
  std::mutex& mtx_;
  std::condition_variable cv_;
  bool quit_ = false;
  std::thread thread_;
};

} // namespace ferry
