#include "agent/migration/vm_state_file.hpp"

#include "agent/migration/migration_destination.hpp"
#include "agent/migration/migration_source.hpp"
#include "agent/migration/migration_state.hpp"
#include "agent/transport/migration_address.hpp"
#include "common/error.hpp"

#include <boost/json.hpp>

#include <condition_variable>
#include <mutex>

namespace ferry {

namespace {

// The engine's status machine, held here instead of by the controller.
struct local_run {
  migration_side side;
  std::mutex m;
  std::condition_variable cv;
  migration_status s = migration_status::none;
  guest::pause_guard kept; // the engine's pause at completion, dropped by the caller

  explicit local_run(migration_side sd) : side(sd) { s = *step(side, s, migration_event::start); }
  bool advance(migration_event ev) {
    std::lock_guard lk{m};
    auto n = step(side, s, ev);
    if (!n)
      return false;
    s = *n;
    cv.notify_all();
    return true;
  }
  migration_hooks hooks(thread_registry* threads) {
    migration_hooks h;
    h.step = [this](migration_event ev) { return advance(ev); };
    h.emit = [](const std::string&) {}; // no MIGRATION events for a snapshot
    h.threads = threads;
    h.keep_stopped = [this](guest::pause_guard& g) {
      std::lock_guard lk{m};
      kept = std::move(g);
    };
    h.complete = [this](guest::pause_guard& g) {
      std::lock_guard lk{m};
      auto n = step(side, s, migration_event::complete);
      if (!n)
        return false;
      s = *n;
      kept = std::move(g);
      cv.notify_all();
      return true;
    };
    return h;
  }
  migration_status wait_end() {
    std::unique_lock lk{m};
    cv.wait(lk, [&] {
      return s == migration_status::completed || s == migration_status::failed ||
             s == migration_status::cancelled;
    });
    return s;
  }
};

caf::expected<migration_address> fd_address(int fd) {
  auto a = parse_migration_uri("file:/proc/self/fd/" + std::to_string(fd));
  if (const auto* err = std::get_if<std::string>(&a))
    return make_ferry_error(errc::invalid_argument, *err);
  return std::get<migration_address>(a);
}

template <class Engine>
caf::error failure(const Engine& e, migration_status s, const char* what) {
  boost::json::object info;
  e.fill_info(s, info);
  const auto* d = info.if_contains("error-desc");
  return make_ferry_error(errc::bad_state_blob,
                          std::string{what} + ": " +
                            (d != nullptr && d->is_string() ? std::string{d->as_string()}
                                                            : "the migration engine stopped"));
}

} // namespace

caf::expected<void> save_vm_state(guest& g, int fd, thread_registry* threads) {
  FERRY_TRY(to, fd_address(fd));
  outgoing_migration plan;
  plan.target = to;
  local_run run{migration_side::source};
  migration_source source{g, std::move(plan), run.hooks(threads)};
  const migration_status end = run.wait_end();
  if (end != migration_status::completed)
    return failure(source, end, "saving the VM state failed");
  return {};
}

caf::expected<void> load_vm_state(guest& g, int fd, thread_registry* threads) {
  FERRY_TRY(from, fd_address(fd));
  incoming_migration plan;
  plan.from = from;
  local_run run{migration_side::destination};
  FERRY_TRY(dest, migration_destination::listen(g, std::move(plan), run.hooks(threads)));
  const migration_status end = run.wait_end();
  if (end != migration_status::completed)
    return failure(*dest, end, "loading the VM state failed");
  return {};
}

} // namespace ferry
