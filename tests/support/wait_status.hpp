#pragma once
// Polls a migration status until it is one of `want`: returns it, or
// "timeout (last: X)" so a failing assertion shows where it got stuck.

#include <chrono>
#include <initializer_list>
#include <string>
#include <thread>

namespace ferry::test {

template <class StatusFn>
std::string wait_for_status(StatusFn&& status, std::initializer_list<const char*> want,
                            std::chrono::milliseconds limit, std::chrono::milliseconds step) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  std::string s;
  while (std::chrono::steady_clock::now() < deadline) {
    s = status();
    for (const char* w : want)
      if (s == w)
        return s;
    std::this_thread::sleep_for(step);
  }
  return "timeout (last: " + s + ")";
}

} // namespace ferry::test
