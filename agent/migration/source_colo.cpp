// The primary of a COLO pair (x-colo): once the secondary holds the whole
// guest, the guest runs on here and is checkpointed to it every
// x-checkpoint-delay ms — paused while its dirty pages and CPU state are
// copied out, then the copy sent and committed there. The secondary lost (its process died, the
// link failed) or x-colo-lost-heartbeat: COLO ends and the guest runs on alone.
//
// Output commit (Remus' "checkpoint" mode): what the guest writes to its
// serial port is held back until the checkpoint that covers it is committed
// on the secondary, so no one outside ever sees output a failover would
// take back — the secondary goes on from exactly where the released output
// ends.
#include "agent/migration/colo_fault.hpp"
#include "agent/migration/percentile.hpp"
#include "agent/migration/source_engine.hpp"

#include <signal.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string_view>
#include <thread>

namespace ferry {

namespace {
using cm = mig::colo_message;
// Held-back output beyond this starts the next checkpoint early: the hold
// stays bounded however much the guest writes.
constexpr size_t held_output_limit = size_t{64} << 10;
constexpr auto output_look = std::chrono::milliseconds(10);
// While no checkpoint can commit (a silent secondary), held output beyond
// this fences the guest.
constexpr size_t held_output_cap = size_t{1} << 20;

} // namespace

caf::expected<void> migration_source::impl::colo_send(mig::colo_message m, uint64_t value) {
  const mig::colo_record r{m, value};
  if (auto ok = colo_x.take(r); !ok)
    return ok;
  return channels[0]->send(mig::record_type::colo, mig::encode(r));
}

caf::expected<void> migration_source::impl::colo_take(mig::record_type type,
                                                      std::span<const uint8_t> payload) {
  colo_heard = clock_type::now();
  if (type == mig::record_type::heartbeat)
    return {};
  if (type == mig::record_type::colo_output)
    return colo_take_output(payload);
  if (type == mig::record_type::abort) {
    auto st = mig::decode_status(payload);
    if (st && st->code == mig::colo_abort_took_over) {
      colo_superseded = true;
      return make_ferry_error(errc::system_error, "the secondary took over: " + st->text);
    }
    colo_secondary_quit = true;
    return make_ferry_error(errc::system_error,
                            "the secondary ended COLO" + (st ? ": " + st->text : std::string{}));
  }
  return make_ferry_error(errc::system_error,
                          std::string{"COLO: the secondary sent "} + mig::to_string(type));
}

caf::expected<void> migration_source::impl::colo_listen() {
  std::vector<uint8_t> buf;
  while (channels[0]->wait_readable(0)) {
    FERRY_TRY(h, channels[0]->receive(buf));
    if (auto ok = colo_take(h.type, buf); !ok)
      return ok;
  }
  return {};
}

caf::expected<void> migration_source::impl::colo_keepalive() {
  const auto now = clock_type::now();
  if (now - colo_beat_sent < mig::colo_heartbeat_interval ||
      now - colo_heard > mig::colo_silent_after)
    return {};
  colo_beat_sent = clock_type::now();
  return channels[0]->send(mig::record_type::heartbeat, mig::encode_heartbeat(++colo_beats));
}

// A secondary silent for the fence timeout may be taking over (the
// operator or the orchestrator, which cannot tell a dead host from a cut
// link, may promote it): this copy stops until told it runs on alone.
void migration_source::impl::colo_fence_if_due() {
  if (plan.colo_fence_ms != 0 &&
      clock_type::now() - colo_heard >= std::chrono::milliseconds(plan.colo_fence_ms))
    colo_fence("nothing heard from the secondary for " + std::to_string(plan.colo_fence_ms) +
               " ms");
}

void migration_source::impl::colo_fence(const std::string& why) {
  if (fence)
    return;
  fence = g.pause();
  fenced = true;
  std::fprintf(stderr,
               "ferry: COLO primary fenced: %s; the guest stays paused until "
               "x-colo-lost-heartbeat\n",
               why.c_str());
  hooks.emit(qmp::event("STOP"));
}

caf::expected<mig::colo_record> migration_source::impl::colo_expect(mig::colo_message m) {
  std::vector<uint8_t> buf;
  for (;;) {
    // A silent secondary (link cut, host gone) is not taken for a dead one:
    // the primary waits, as QEMU's, for x-colo-lost-heartbeat.
    while (!channels[0]->wait_readable(100)) {
      if (colo_lost || stop)
        return make_ferry_error(errc::system_error, "COLO: x-colo-lost-heartbeat");
      colo_fence_if_due();
    }
    FERRY_TRY(h, channels[0]->receive(buf));
    if (h.type != mig::record_type::colo) {
      if (auto ok = colo_take(h.type, buf); !ok)
        return ok.error();
      continue;
    }
    colo_heard = clock_type::now();
    FERRY_TRY(r, mig::decode_colo(buf));
    if (auto ok = colo_x.take(r); !ok)
      return ok.error();
    if (r.message != m)
      return make_ferry_error(errc::system_error, std::string{"COLO: the secondary sent "} +
                                                    std::string{mig::to_string(r.message)} +
                                                    " instead of " +
                                                    std::string{mig::to_string(m)});
    return r;
  }
}

// The secondary loaded the first copy: it says checkpoint-ready instead of
// ready, and from here the guest runs on this side, tracked again.
caf::expected<source_event> migration_source::impl::colo_begin() {
  if (auto r = colo_expect(cm::checkpoint_ready); !r)
    return r.error();
  downtime_ms = ms_since(downtime_start);
  total_ms = ms_since(start);
  if (!hooks.step(migration_event::start_colo))
    return cancelled_error();
  if (auto ok = g.dirty_log().start(); !ok)
    return ok.error();
  tracking = true;
  // The guest has been paused since the switchover's last sync, and the
  // secondary holds every page as of then: a first sync that reports every
  // page (KVM's initially-set bitmap) carries nothing new.
  {
    dirty_bitmap drain{g.memory().pages()};
    if (auto ok = g.dirty_log().sync(drain); !ok)
      return ok.error();
  }
  colo_start = clock_type::now();
  colo_heard = colo_start;
  channels[0]->keep_through_silence();
  limiter.set_limit(0);
  in_switchover = false;
  if (serial_port* s = g.serial())
    s->hold(true);
  let_guest_run();
  return source_event::colo_started;
}

caf::expected<source_event> migration_source::impl::colo() {
  serial_port* out = g.serial();
  for (;;) {
    const auto due = clock_type::now() + std::chrono::milliseconds(plan.checkpoint_delay_ms);
    caf::expected<void> ok{};
    for (;;) {
      {
        std::unique_lock lk{colo_mtx};
        colo_cv.wait_until(lk, std::min(due, clock_type::now() + output_look),
                           [&] { return colo_lost || stop; });
      }
      if (colo_lost || stop || clock_type::now() >= due ||
          (out != nullptr && out->held_bytes() >= held_output_limit))
        break;
      // Between checkpoints: the secondary's heartbeats (or its word that
      // COLO ended) taken, this side's sent, a silent secondary fenced.
      ok = colo_listen();
      if (ok)
        ok = colo_keepalive();
      if (ok && plan.colo_compare)
        ok = colo_compare_output();
      if (!ok || colo_diverged)
        break;
      colo_fence_if_due();
    }
    if (colo_lost)
      return colo_failover(
        "request", make_ferry_error(errc::bad_run_state, "x-colo-lost-heartbeat on the primary"));
    if (ok && !fence)
      ok = checkpoint();
    if (!ok)
      return colo_end(ok.error());
  }
}

source_event migration_source::impl::colo_end(const caf::error& why) {
  if (colo_superseded)
    return colo_superseded_end(why);
  // An ended link is the secondary's death only if it was heard from just
  // before: one that ends after a silence (a reset when a cut link comes
  // back) proves nothing, and a fenced guest runs again only on the word.
  const bool fresh = clock_type::now() - colo_heard <= mig::colo_silent_after;
  if (colo_lost || colo_secondary_quit || (!fence && fresh && channels[0]->peer_ended()))
    return colo_failover(colo_lost ? "request" : "error", why);
  // Silence: the secondary may live on and, promoted, run the guest. Wait
  // for the word (x-colo-lost-heartbeat), fenced when due; held output
  // that outgrows its bound fences at once (the guest would only write
  // more that no one may see yet).
  std::fprintf(stderr,
               "ferry: COLO primary: the secondary went silent (%s); waiting for "
               "x-colo-lost-heartbeat\n",
               describe(why).c_str());
  serial_port* out = g.serial();
  while (!colo_lost && !stop) {
    if (out != nullptr && out->held_bytes() >= held_output_cap)
      colo_fence("1 MiB of output held that no checkpoint can commit");
    colo_fence_if_due();
    std::unique_lock lk{colo_mtx};
    colo_cv.wait_for(lk, output_look, [&] { return colo_lost || stop; });
  }
  return colo_failover("request", why);
}

// The secondary took over (x-colo-lost-heartbeat there while this side
// lived): its copy is the guest now. This one stops for good, as a source
// after a completed migration does, and its output not yet committed is
// dropped — the secondary writes it again from the checkpoint before it.
source_event migration_source::impl::colo_superseded_end(const caf::error& why) {
  {
    std::lock_guard lk{mtx};
    if (error.empty())
      error = describe(why);
  }
  halt();
  senders.clear();
  if (tracking) {
    g.dirty_log().stop();
    tracking = false;
  }
  if (!fence)
    fence = g.pause();
  if (serial_port* s = g.serial()) {
    s->discard_held();
    s->hold(false);
  }
  std::fprintf(stderr, "ferry: COLO primary stops: %s\n", describe(why).c_str());
  report_checkpoints();
  if (hooks.colo_exit)
    hooks.colo_exit("request");
  if (hooks.keep_stopped)
    hooks.keep_stopped(fence);
  fenced = false;
  hooks.step(migration_event::colo_failover);
  {
    std::lock_guard lk{mtx};
    channels.clear();
  }
  return source_event::colo_ended;
}

// One checkpoint. The guest is paused only while its dirty pages and CPU
// state are copied out (and the digest takes them); it runs again while the
// copy goes to the secondary and is committed there.
caf::expected<void> migration_source::impl::checkpoint() {
  const uint64_t n = colo_x.committed() + 1;
  const auto began = clock_type::now();
  colo_diverged = false;
  checkpointing = true;
  paused = g.pause();
  // Everything the guest wrote until now belongs to this checkpoint.
  serial_port* out = g.serial();
  const uint64_t output_upto = out != nullptr ? out->bytes_written() : 0;
  todo.clear();
  if (auto ok = g.dirty_log().sync(todo); !ok)
    return ok;
  ++ctr.sync_count;
  copy_out_checkpoint();
  FERRY_TRY(cpu, g.save_cpu_state());
  if (n == colo_fault("slow-checkpoint"))
    std::this_thread::sleep_for(std::chrono::seconds(1));
  paused = {};
  checkpointing = false;
  // Whether it runs (not merely ran before this checkpoint's pause): a
  // takeover starts it only then.
  const bool running = g.state() == run_state::running;
  const auto pause = clock_type::now() - began;
  if (checkpoint_pause_us.size() < (size_t{1} << 20))
    checkpoint_pause_us.push_back(static_cast<uint32_t>(std::min<int64_t>(
      std::chrono::duration_cast<std::chrono::microseconds>(pause).count(), UINT32_MAX)));
  {
    std::lock_guard lk{colo_stats_mtx};
    colo_pause_s.observe(std::chrono::duration<double>(pause).count());
    colo_pages.observe(static_cast<double>(ckpt_entries.size()));
  }

  if (auto ok = colo_send(cm::checkpoint_request, n); !ok)
    return ok;
  if (auto r = colo_expect(cm::checkpoint_reply); !r)
    return r.error();
  if (n == colo_fault("bad-message")) {
    const auto bad = mig::encode(mig::colo_record{cm::vmstate_send, n + 5});
    if (auto ok = channels[0]->send(mig::record_type::colo, bad); !ok)
      return ok;
    return colo_expect(cm::vmstate_received).error(); // the secondary's abort
  }
  if (auto ok = colo_send(cm::vmstate_send, n); !ok)
    return ok;
  if (auto ok = send_checkpoint_pages(); !ok)
    return ok;
  if (n == colo_fault("die-mid-checkpoint"))
    ::raise(SIGKILL);
  auto& main = *channels[0];
  if (auto ok = main.send(mig::record_type::cpu_state, cpu); !ok)
    return ok;
  if (auto ok = main.send(mig::record_type::devices, mig::encode(mig::device_section{running}));
      !ok)
    return ok;
  if (auto ok = main.send(mig::record_type::digest, mig::encode_digest(digest.value())); !ok)
    return ok;
  if (plan.colo_compare) {
    // Where this checkpoint ends the output: the secondary's run from it
    // counts its output from here.
    const mig::colo_output_record base{mig::colo_output_kind::base, n, output_upto, {}};
    if (auto ok = main.send(mig::record_type::colo_output, mig::encode(base)); !ok)
      return ok;
  }
  if (auto ok = colo_send(cm::vmstate_size, ckpt_entries.size()); !ok)
    return ok;
  if (auto r = colo_expect(cm::vmstate_received); !r)
    return r.error();
  if (auto r = colo_expect(cm::vmstate_loaded); !r)
    return r.error();
  if (out != nullptr)
    out->release(output_upto);
  // The secondary's run before this checkpoint is gone: its next output
  // starts at output_upto.
  colo_sec_out.clear();
  colo_sec_pos = output_upto;
  checkpoint_pages += ckpt_entries.size();
  ++checkpoints;
  return {};
}

// The dirty pages into the checkpoint's own buffer (zero pages as entries
// only), each page's hash into the digest as copied.
void migration_source::impl::copy_out_checkpoint() {
  const uint8_t* ram = g.memory().data();
  ckpt_entries.clear();
  ckpt_data.resize(todo.count() * mig::page_size);
  size_t with_data = 0;
  for (size_t w = 0; w < todo.word_count(); ++w) {
    for (uint64_t bits = todo.word(w); bits != 0; bits &= bits - 1) {
      const uint64_t pfn = w * 64 + static_cast<uint64_t>(__builtin_ctzll(bits));
      const uint8_t* src = ram + pfn * mig::page_size;
      if (plan.detect_zero && mig::is_zero_page(src)) {
        ckpt_entries.push_back(pfn | mig::zero_page_bit);
        digest.set(pfn, mig::zero_page_hash());
        continue;
      }
      uint8_t* copy = ckpt_data.data() + with_data * mig::page_size;
      std::memcpy(copy, src, mig::page_size);
      digest.set(pfn, mig::page_hash(copy));
      ckpt_entries.push_back(pfn);
      ++with_data;
    }
  }
}

// The copied pages as page records, a batch at a time.
caf::expected<void> migration_source::impl::send_checkpoint_pages() {
  const uint8_t* data = ckpt_data.data();
  for (size_t at = 0; at < ckpt_entries.size(); at += mig::max_batch_pages) {
    const size_t count = std::min<size_t>(mig::max_batch_pages, ckpt_entries.size() - at);
    const std::span<const uint64_t> entries{ckpt_entries.data() + at, count};
    size_t with_data = 0;
    for (uint64_t e : entries)
      with_data += (e & mig::zero_page_bit) == 0 ? 1 : 0;
    mig::page_batch_parts batch;
    mig::encode_pages(batch, entries, {});
    std::array<iovec, 3> parts{batch.parts[0], batch.parts[1],
                               iovec{const_cast<uint8_t*>(data), with_data * mig::page_size}};
    if (auto ok = channels[0]->send(mig::record_type::pages, parts, 2); !ok)
      return ok;
    data += with_data * mig::page_size;
    ctr.normal_pages.fetch_add(with_data, std::memory_order_relaxed);
    ctr.zero_pages.fetch_add(count - with_data, std::memory_order_relaxed);
    ctr.add_sent(mig::header_size + batch.size() + with_data * mig::page_size, false);
  }
  return {};
}

// The pair's figures on stderr as COLO ends (bench/colo_bench.sh reads them).
void migration_source::impl::report_checkpoints() {
  auto us = checkpoint_pause_us;
  std::sort(us.begin(), us.end());
  const double secs = std::chrono::duration<double>(clock_type::now() - colo_start).count();
  std::fprintf(
    stderr,
    "ferry: COLO primary: %llu checkpoints in %.1f s, pause p50 %u us p99 %u us, "
    "%llu pages a checkpoint, %llu output divergences\n",
    static_cast<unsigned long long>(checkpoints.load()), secs, percentile(us, 0.5),
    percentile(us, 0.99),
    static_cast<unsigned long long>(checkpoints == 0 ? 0 : checkpoint_pages / checkpoints),
    static_cast<unsigned long long>(colo_divergences));
}

// COLO ends here: the guest runs on alone. A secondary that may still be
// alive (x-colo-lost-heartbeat here, or its malformed checkpoint) is told,
// so it does not take over as well.
source_event migration_source::impl::colo_failover(std::string_view reason, const caf::error& why) {
  {
    std::lock_guard lk{mtx};
    if (error.empty())
      error = describe(why);
  }
  if (!channels.empty())
    (void) channels[0]->send(
      mig::record_type::abort,
      mig::encode(mig::status_msg{mig::colo_abort_ended, "the primary ended COLO"}));
  halt();
  senders.clear();
  if (tracking) {
    g.dirty_log().stop();
    tracking = false;
  }
  // This side's timeline is the guest's now: all its output goes out.
  if (serial_port* s = g.serial())
    s->hold(false);
  if (fence) {
    fence = {};
    fenced = false;
    if (g.state() == run_state::running)
      hooks.emit(qmp::event("RESUME"));
  }
  let_guest_run();
  report_checkpoints();
  if (hooks.colo_exit)
    hooks.colo_exit(reason);
  hooks.step(migration_event::colo_failover);
  {
    std::lock_guard lk{mtx};
    channels.clear();
  }
  return source_event::colo_ended;
}

bool migration_source::colo_holds_guest() const {
  return impl_->fenced || impl_->checkpointing;
}

void migration_source::colo_lost_heartbeat() {
  {
    std::lock_guard lk{impl_->colo_mtx};
    impl_->colo_lost = true;
  }
  impl_->colo_cv.notify_all();
}

} // namespace ferry
