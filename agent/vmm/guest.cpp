#include "agent/vmm/guest.hpp"

#include "common/error.hpp"

#include <utility>

namespace ferry {

const char* to_string(run_state s) {
  switch (s) {
    case run_state::prelaunch:
      return "prelaunch";
    case run_state::running:
      return "running";
    case run_state::paused:
      return "paused";
    case run_state::shutdown:
      return "shutdown";
    case run_state::internal_error:
      return "internal-error";
  }
  return "internal-error";
}

caf::expected<void> guest::start() {
  std::lock_guard lk{mtx_};
  if (started_)
    return make_ferry_error(errc::bad_run_state, "guest already started");
  if (auto ok = do_start(pauses_ > 0); !ok)
    return ok;
  started_ = true;
  return {};
}

guest::pause_guard guest::pause() {
  std::lock_guard lk{mtx_};
  if (pauses_++ == 0 && started_)
    do_pause();
  return pause_guard{this};
}

void guest::halt() {
  std::lock_guard lk{mtx_};
  if (std::exchange(halted_, true))
    return;
  if (pauses_++ == 0 && started_)
    do_pause();
}

void guest::unpause() {
  std::lock_guard lk{mtx_};
  if (--pauses_ == 0 && started_)
    do_resume();
}

run_state guest::state() const {
  std::lock_guard lk{mtx_};
  if (!started_)
    return run_state::prelaunch;
  const run_state s = execution_state();
  if (s != run_state::running)
    return s;
  return pauses_ > 0 ? run_state::paused : run_state::running;
}

} // namespace ferry
