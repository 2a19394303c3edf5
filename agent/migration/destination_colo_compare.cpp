// A COLO secondary in compare mode (the primary's x-ferry-colo
// output=compare): the guest runs here from each committed checkpoint, its
// serial output held and sent to the primary, which lets out what both
// copies wrote alike. At the next checkpoint the run is undone — the pages
// it dirtied come back from a copy of the last checkpoint — and the new
// checkpoint is applied to both. A takeover goes on from where this copy
// runs (or, mid-checkpoint, from the last checkpoint), its output from
// where a reader left the primary's: nothing twice, nothing missing.
#include "agent/migration/colo_fault.hpp"
#include "agent/migration/destination_impl.hpp"

#include <algorithm>
#include <cstring>

namespace ferry {

namespace {
constexpr size_t output_chunk = size_t{16} << 10;
} // namespace

// checkpoint-request: this copy stops and its RAM goes back to the last
// checkpoint (the pages its run dirtied, from the copy kept).
void migration_destination::impl::colo_compare_request() {
  if (!colo_started || colo_hold)
    return;
  colo_hold = g.pause();
  dirty_bitmap dirtied{g.memory().pages()};
  if (auto ok = g.dirty_log().sync(dirtied); !ok)
    std::fprintf(stderr, "ferry: COLO secondary: dirty log: %s\n", describe(ok.error()).c_str());
  uint8_t* ram = g.memory().data();
  for (size_t w = 0; w < dirtied.word_count(); ++w)
    for (uint64_t bits = dirtied.word(w); bits != 0; bits &= bits - 1) {
      const uint64_t pfn = w * 64 + static_cast<uint64_t>(__builtin_ctzll(bits));
      std::memcpy(ram + pfn * mig::page_size, colo_cache.data() + pfn * mig::page_size,
                  mig::page_size);
    }
}

// The checkpoint is this copy now (RAM, cache and vCPUs): its output counts
// from the checkpoint's base, and it runs — if the primary's guest does.
std::optional<std::string>
migration_destination::impl::colo_compare_commit(const std::vector<uint8_t>& blob) {
  colo_cpu = blob;
  serial_port* s = g.serial();
  colo_base = colo_sent = colo_next_base;
  if (s != nullptr) {
    s->hold(true);
    s->renumber(colo_base);
  }
  if (!source_running) {
    if (!colo_hold)
      colo_hold = g.pause();
    return std::nullopt;
  }
  if (!colo_started) {
    if (auto ok = g.dirty_log().start(); !ok)
      return "dirty log: " + describe(ok.error());
    dirty_bitmap drain{g.memory().pages()}; // the first sync reports every page
    (void) g.dirty_log().sync(drain);
    if (auto ok = g.start(); !ok)
      return "starting the guest: " + describe(ok.error());
    colo_started = true;
  }
  colo_hold = {};
  return std::nullopt;
}

// The output this copy wrote since the last look, to the primary.
caf::expected<void> migration_destination::impl::colo_forward_output() {
  serial_port* s = g.serial();
  if (s == nullptr || !colo_started)
    return {};
  std::string fresh = s->held_from(colo_sent);
  for (size_t at = 0; at < fresh.size(); at += output_chunk) {
    const size_t n = std::min(output_chunk, fresh.size() - at);
    mig::colo_output_record r{mig::colo_output_kind::output, colo_x.committed(), colo_sent, {}};
    r.bytes.assign(fresh.begin() + static_cast<std::ptrdiff_t>(at),
                   fresh.begin() + static_cast<std::ptrdiff_t>(at + n));
    static const uint64_t diverge_after = colo_fault("diverge");
    if (diverge_after != 0 && colo_x.committed() == diverge_after && !r.bytes.empty())
      r.bytes[0] ^= 0x20;
    if (auto ok = main->send(mig::record_type::colo_output, mig::encode(r)); !ok)
      return ok;
    colo_sent += n;
  }
  return {};
}

caf::expected<void>
migration_destination::impl::colo_take_output(std::span<const uint8_t> payload) {
  FERRY_TRY(r, mig::decode_colo_output(payload));
  if (!colo_compare || r.kind == mig::colo_output_kind::output)
    return make_ferry_error(errc::system_error, "output records outside compare mode");
  if (r.kind == mig::colo_output_kind::base) {
    if (colo_x.step() != mig::colo_step::sending || r.checkpoint != colo_x.checkpoint())
      return make_ferry_error(errc::system_error, "an output base outside its checkpoint");
    colo_next_base = r.position;
    return {};
  }
  // Released: a reader saw the primary's output to here; what this copy
  // holds before it is dropped (it wrote the same).
  if (r.position > colo_released) {
    colo_released = r.position;
    if (serial_port* s = g.serial()) {
      s->suppress_until(colo_released);
      s->release(colo_released);
    }
  }
  return {};
}

// This copy is the guest now. Mid-checkpoint its RAM is already the last
// checkpoint's: its vCPUs and output count go back there too.
void migration_destination::impl::colo_compare_take_over() {
  if (!colo_started)
    return;
  serial_port* s = g.serial();
  if (colo_hold) {
    if (auto ok = g.load_cpu_state(colo_cpu); !ok)
      std::fprintf(stderr, "ferry: COLO secondary: %s\n", describe(ok.error()).c_str());
    if (s != nullptr)
      s->renumber(colo_base);
  }
  g.dirty_log().stop();
  if (s != nullptr) {
    s->suppress_until(colo_released);
    s->hold(false);
  }
  colo_hold = {};
}

// COLO ends with the primary running the guest: this copy stops for good.
void migration_destination::impl::colo_compare_stop() {
  if (!colo_compare || !colo_started)
    return;
  if (!colo_hold)
    colo_hold = g.pause();
  g.dirty_log().stop();
  if (hooks.keep_stopped)
    hooks.keep_stopped(colo_hold);
}

} // namespace ferry
