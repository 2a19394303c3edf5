// The outgoing engine's mapped-ram: the file laid out for this guest's RAM,
// then its one pass — the guest is stopped, so every page with data is
// written once, at its offset, by several threads at a time.
#include "agent/migration/mapped_ram_io.hpp"
#include "agent/migration/source_engine.hpp"

#include <fcntl.h>
#include <unistd.h>

namespace ferry {

namespace json = boost::json;

caf::expected<void> migration_source::impl::open_mapped_file() {
  mapped_layout = mig::plan_mapped_ram(g.memory().size());
  // Created (or emptied) at the size of everything before the state
  // region: holes until pages are written, and where zero pages stay.
  mapped_fd =
    unique_fd{::open(plan.target.path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)};
  if (!mapped_fd)
    return make_system_error("Could not open '" + plan.target.path + "'");
  if (::ftruncate(mapped_fd.get(), static_cast<off_t>(mapped_layout.state_offset)) != 0)
    return make_system_error("Could not size '" + plan.target.path + "'");
  // The stream (hello, state, digest) begins after the pages.
  plan.target.offset = mapped_layout.state_offset;
  return {};
}

caf::expected<source_event> migration_source::impl::mapped_pass() {
  ++passes;
  const auto pass_start = clock_type::now();
  pass_todo_pages = todo.count();
  in_pass = true;
  auto done = write_mapped_ram(mapped_fd.get(), mapped_layout, g.memory(), todo,
                               plan.detect_zero ? &holes : nullptr, plan.mapped_threads, digest,
                               stop, hooks.threads);
  in_pass = false;
  if (!done)
    return stop ? check_stop_error() : done.error();
  ctr.normal_pages.fetch_add(done->data_pages, std::memory_order_relaxed);
  ctr.zero_pages.fetch_add(done->zero_pages, std::memory_order_relaxed);
  const uint64_t bytes = done->data_pages * mig::page_size;
  ctr.add_sent(bytes, plan.mapped_threads > 1);
  const double secs = std::chrono::duration<double>(clock_type::now() - pass_start).count();
  if (secs >= 0.001) {
    bandwidth = static_cast<uint64_t>(static_cast<double>(bytes) / secs);
    pages_per_second = static_cast<uint64_t>(static_cast<double>(pass_todo_pages) / secs);
  }
  todo.clear();
  ++ctr.sync_count;
  emit("MIGRATION_PASS", json::object{{"pass", ctr.sync_count.load()}});
  remaining_bytes = 0;
  expected_downtime_ms = 0;
  return source_event::pass_converged;
}

} // namespace ferry
