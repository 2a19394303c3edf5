// The outgoing engine's mapped-ram: the file laid out for this guest's RAM;
// each pass writes its dirty pages at their offsets (in place: the file
// stays the size of RAM however many passes there are), several threads at
// a time.
#include "agent/migration/mapped_ram_io.hpp"
#include "agent/migration/source_engine.hpp"

#include <fcntl.h>
#include <unistd.h>

namespace ferry {

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
  mapped_bits.assign(mapped_layout.bitmap_bytes(), 0);
  return {};
}

// A pass's pages to their offsets (in place of the page senders): the
// first pass takes the holes of the RAM file as known zero, as theirs do.
caf::expected<void> migration_source::impl::write_mapped_pass(const dirty_bitmap& pages) {
  const dirty_bitmap* known_zero = plan.detect_zero && !mapped_holes_read ? &holes : nullptr;
  mapped_holes_read = true;
  auto done =
    write_mapped_ram(mapped_fd.get(), mapped_layout, g.memory(), pages, known_zero, mapped_bits,
                     digest, stop, {plan.mapped_threads, &limiter, hooks.threads});
  if (!done)
    return stop ? check_stop() : caf::expected<void>{done.error()};
  ctr.normal_pages.fetch_add(done->data_pages, std::memory_order_relaxed);
  ctr.zero_pages.fetch_add(done->zero_pages, std::memory_order_relaxed);
  ctr.add_sent(done->data_pages * mig::page_size, plan.mapped_threads > 1);
  return {};
}

} // namespace ferry
