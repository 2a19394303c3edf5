#include "common/background_worker.hpp"

#include "common/thread_name.hpp"

namespace ferry {

void background_worker::start(std::string name, std::function<void()> loop) {
  if (thread_.joinable())
    thread_.join();
  {
    std::lock_guard lk{mtx_};
    quit_ = false;
  }
  thread_ = std::thread{[name = std::move(name), loop = std::move(loop)] {
    name_this_thread(name);
    loop();
  }};
}

void background_worker::stop(const std::function<void()>& interrupt) {
  {
    std::lock_guard lk{mtx_};
    quit_ = true;
    if (interrupt)
      interrupt();
  }
  cv_.notify_all();
  if (thread_.joinable())
    thread_.join();
}

} // namespace ferry
