// The incoming engine's mapped-ram: the file's header and bitmap checked
// against this guest before anything is read into it, the stream read from
// the file's state region, the pages from their offsets by several threads.
#include "agent/migration/destination_impl.hpp"

#include <fcntl.h>
#include <unistd.h>

namespace ferry {

caf::expected<void> migration_destination::impl::open_mapped_file(migration_channel*& ch) {
  if (plan.from.type != migration_address::kind::file || plan.from.offset != 0)
    return make_ferry_error(errc::invalid_argument,
                            "mapped-ram needs a file: URI without an offset (pages sit at fixed "
                            "offsets in the file)");
  mapped_fd = unique_fd{::open(plan.from.path.c_str(), O_RDONLY | O_CLOEXEC)};
  if (!mapped_fd)
    return make_system_error("Could not open '" + plan.from.path + "'");
  FERRY_TRY(index, read_mapped_ram_index(mapped_fd.get(), g.memory().size()));
  unique_fd state{::open(plan.from.path.c_str(), O_RDONLY | O_CLOEXEC)};
  if (!state || ::lseek(state.get(), static_cast<off_t>(index.layout.state_offset), SEEK_SET) < 0)
    return make_system_error("Could not read the state of '" + plan.from.path + "'");
  auto stream =
    std::make_unique<migration_channel>(std::move(state), migration_channel::kind::file);
  std::lock_guard lk{mtx};
  for (auto& c : channels)
    if (c.get() == ch) {
      c = std::move(stream);
      ch = c.get();
      break;
    }
  mapped = std::move(index);
  return {};
}

caf::expected<void> migration_destination::impl::load_mapped_pages() {
  // x-ignore-shared: RAM is the shared file the source used; the mapped
  // file holds no page of it, and nothing here may zero it.
  if ((hello.flags & mig::flag_ignore_shared) != 0)
    return {};
  // The readers fill RAM themselves, at memory speed: a background prefill
  // ahead of them would only take the cores they need.
  g.memory().stop_prefill();
  FERRY_TRY(done, read_mapped_ram(mapped_fd.get(), *mapped, g.memory(), plan.mapped_threads, digest,
                                  stop, hooks.threads));
  ctr.normal_pages.fetch_add(done.data_pages, std::memory_order_relaxed);
  ctr.zero_pages.fetch_add(done.zero_pages, std::memory_order_relaxed);
  return {};
}

} // namespace ferry
