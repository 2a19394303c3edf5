// The worker helper: its loop runs on a named thread, waits end on wake and
// on stop, and a stopped worker can run again.

#include "common/background_worker.hpp"

#include <gtest/gtest.h>

#include <pthread.h>
#include <unistd.h>

#include <atomic>
#include <chrono>

using namespace ferry;
using namespace std::chrono_literals;

TEST(background_worker, runs_named_wakes_and_stops_promptly) {
  std::mutex mtx;
  background_worker w{mtx};
  int ticks = 0;
  bool asked = false;
  std::string name;
  w.start("test-worker", [&] {
    char buf[16] = {};
    ::pthread_getname_np(::pthread_self(), buf, sizeof buf);
    std::unique_lock lk{mtx};
    name = buf;
    while (!w.stopping()) {
      if (asked) {
        ++ticks;
        asked = false;
      }
      w.wait(lk); // no timeout: only wake() or stop() end it
    }
  });
  for (int i = 0; i < 3; ++i) {
    {
      std::lock_guard lk{mtx};
      asked = true;
    }
    w.wake();
    for (int spin = 0; spin < 2000; ++spin) {
      std::lock_guard lk{mtx};
      if (!asked)
        break;
      std::this_thread::sleep_for(1ms);
    }
  }
  const auto t0 = std::chrono::steady_clock::now();
  w.stop();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 1s) << "stop ends an untimed wait";
  EXPECT_EQ(ticks, 3);
  EXPECT_EQ(name, "test-worker");
  w.stop(); // again: nothing
}

TEST(background_worker, a_long_timed_wait_ends_at_stop_and_the_worker_runs_again) {
  std::mutex mtx;
  background_worker w{mtx};
  std::atomic<int> runs{0};
  auto loop = [&] {
    ++runs;
    std::unique_lock lk{mtx};
    while (w.wait_for(lk, 1h)) {
    }
  };
  w.start("test-worker", loop);
  std::this_thread::sleep_for(10ms);
  const auto t0 = std::chrono::steady_clock::now();
  w.stop();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 1s);
  w.start("test-worker", loop);
  w.stop();
  EXPECT_EQ(runs, 2);
}

// As a vCPU blocked in KVM_RUN: the loop waits outside the condition
// variable (here in read()), and stop's interrupt gets it out. The
// interrupt must see stopping() already true, or the loop could block again.
TEST(background_worker, stop_interrupts_a_loop_blocked_outside_its_waits) {
  std::mutex mtx;
  background_worker w{mtx};
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  std::atomic<int> reads{0};
  w.start("test-blocked", [&] {
    std::unique_lock lk{mtx};
    while (!w.stopping()) {
      lk.unlock();
      char c;
      if (::read(fds[0], &c, 1) == 1)
        ++reads;
      lk.lock();
    }
  });
  std::this_thread::sleep_for(10ms);
  bool stopping_seen = false;
  w.stop([&] {
    stopping_seen = w.stopping();
    const char c = 'x';
    EXPECT_EQ(::write(fds[1], &c, 1), 1);
  });
  EXPECT_TRUE(stopping_seen);
  EXPECT_EQ(reads, 1);
  ::close(fds[0]);
  ::close(fds[1]);
}
