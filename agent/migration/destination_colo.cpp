// The secondary of a COLO pair (x-colo): it holds the guest, not running,
// as the last whole checkpoint. Each checkpoint is staged apart from the
// guest and committed only once all of it arrived and its digest matches
// the primary's; one cut off is dropped. The primary lost (its process
// died: the link closed; or x-colo-lost-heartbeat here): this side takes
// over and the guest runs from the last whole checkpoint. A malformed
// checkpoint, or the primary ending COLO itself, ends COLO here without
// taking over: the primary runs the guest.
#include "agent/migration/checkpoint_staging.hpp"
#include "agent/migration/destination_impl.hpp"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <thread>

namespace ferry {

namespace {

using cm = mig::colo_message;

// A page record whole into `buf`: its CRC covers prefix and entries only
// (the page data is proven by the digest at the commit).
caf::expected<void> read_page_record(migration_channel& ch, const mig::record_header& h,
                                     std::vector<uint8_t>& buf) {
  buf.resize(h.length);
  const size_t prefix = std::min<size_t>(h.length, mig::batch_prefix);
  if (auto ok = ch.read_payload(buf.data(), prefix); !ok)
    return ok;
  FERRY_TRY(head_size, mig::page_batch_head_size({buf.data(), prefix}));
  if (h.length < head_size)
    return mig::decode_page_head({buf.data(), prefix}, h.length, 0).error();
  if (auto ok = ch.read_payload(buf.data() + prefix, head_size - prefix); !ok)
    return ok;
  if (auto ok = ch.read_payload(buf.data() + head_size, h.length - head_size, true); !ok)
    return ok;
  return ch.end_payload(h);
}

} // namespace

caf::expected<void> migration_destination::impl::colo_send(mig::colo_message m, uint64_t value) {
  const mig::colo_record r{m, value};
  if (auto ok = colo_x.take(r); !ok)
    return ok;
  return main->send(mig::record_type::colo, mig::encode(r));
}

caf::expected<destination_event> migration_destination::impl::colo_begin() {
  if (auto ok = colo_send(cm::checkpoint_ready, 0); !ok)
    return ok.error();
  main->keep_through_silence();
  colo_compare = (hello.flags & mig::flag_colo_compare) != 0;
  if (colo_compare) {
    const auto ram = g.memory().bytes();
    colo_cache.assign(ram.begin(), ram.end()); // checkpoint 0: the first whole copy
  }
  if (!hooks.step(migration_event::start_colo))
    return refuse("the incoming migration ended before COLO began");
  return destination_event::colo_started;
}

destination_event migration_destination::impl::colo_failover(std::string_view reason,
                                                             const caf::error& why) {
  std::fprintf(stderr, "ferry: COLO secondary takes over from checkpoint %llu: %s\n",
               static_cast<unsigned long long>(colo_x.committed()), describe(why).c_str());
  if (colo_compare)
    colo_compare_take_over();
  if (hooks.colo_exit)
    hooks.colo_exit(reason);
  colo_took_over = true;
  return destination_event::colo_ended;
}

caf::error migration_destination::impl::colo_fail(const std::string& why) {
  // The primary hears it and runs on alone; this copy never starts.
  (void) main->send(mig::record_type::abort,
                    mig::encode(mig::status_msg{mig::colo_abort_ended, why}));
  colo_compare_stop();
  if (hooks.colo_exit)
    hooks.colo_exit("error");
  return refuse("COLO: " + why);
}

// A page record of the checkpoint in flight into the staging area.
std::optional<std::string> migration_destination::impl::stage_pages(std::span<const uint8_t> buf,
                                                                    checkpoint_staging& staging,
                                                                    uint64_t& arrived) {
  auto b = mig::decode_pages(buf, g.memory().pages());
  if (!b)
    return describe(b.error());
  size_t at = 0;
  for (uint32_t i = 0; i < b->count; ++i) {
    uint64_t e = 0;
    std::memcpy(&e, b->entries.data() + size_t{i} * 8, 8);
    std::span<const uint8_t> data;
    if ((e & mig::zero_page_bit) == 0) {
      data = b->data.subspan(at, mig::page_size);
      at += mig::page_size;
    }
    if (auto ok = staging.stage_page(e & ~mig::zero_page_bit, data); !ok)
      return describe(ok.error());
    ++arrived;
  }
  return std::nullopt;
}

// The checkpoint in flight becomes the guest here, after the proof that the
// guest as it will be is, page by page, what the primary holds.
std::optional<std::string>
migration_destination::impl::commit_checkpoint(checkpoint_staging& staging) {
  staging.for_each_page([&](uint64_t pfn, std::span<const uint8_t> data) {
    digest.set(pfn, data.empty() ? mig::zero_page_hash() : mig::page_hash(data.data()));
  });
  if (!source_digest || *source_digest != digest.value())
    return "checkpoint " + std::to_string(colo_x.checkpoint()) +
           " does not match the primary's digest";
  if (colo_compare) // the last checkpoint, kept to go back to, takes it too
    staging.for_each_page([&](uint64_t pfn, std::span<const uint8_t> data) {
      uint8_t* to = colo_cache.data() + pfn * mig::page_size;
      if (data.empty())
        std::memset(to, 0, mig::page_size);
      else
        std::memcpy(to, data.data(), mig::page_size);
    });
  auto cpu_blob = staging.commit(g.memory().bytes());
  if (!cpu_blob)
    return describe(cpu_blob.error());
  if (auto ok = g.load_cpu_state(*cpu_blob); !ok)
    return describe(ok.error());
  if (colo_compare)
    return colo_compare_commit(*cpu_blob);
  return std::nullopt;
}

// x-colo-lost-heartbeat here: the primary, which may still live (a silent
// link), is told first that this side runs the guest now, so that it stops
// its copy as soon as it hears.
destination_event migration_destination::impl::colo_take_over() {
  (void) main->send(mig::record_type::abort,
                    mig::encode(mig::status_msg{mig::colo_abort_took_over,
                                                "x-colo-lost-heartbeat on the secondary"}));
  colo_noticed = true;
  return colo_failover(
    "request", make_ferry_error(errc::bad_run_state, "x-colo-lost-heartbeat on the secondary"));
}

// The primary ended COLO and runs the guest: this copy never starts.
caf::error migration_destination::impl::colo_primary_runs(std::span<const uint8_t> abort_payload) {
  auto st = mig::decode_status(abort_payload);
  colo_compare_stop();
  if (hooks.colo_exit)
    hooks.colo_exit("request");
  return refuse("the primary ended COLO and runs the guest" +
                (st ? ": " + st->text : std::string{}));
}

// The link failed while records may still wait unread: a secondary that was
// stopped or fell behind finds the primary's last word — that it ended COLO
// and runs on alone — behind records it has yet to answer. That word decides
// before any takeover.
std::optional<caf::error> migration_destination::impl::colo_primary_ended() {
  std::vector<uint8_t> buf;
  while (main->wait_readable(0)) {
    auto h = main->receive_header();
    if (!h)
      return std::nullopt;
    auto ok = h->type == mig::record_type::pages ? read_page_record(*main, *h, buf)
                                                 : main->receive_payload(*h, buf);
    if (!ok)
      return std::nullopt;
    if (h->type == mig::record_type::abort)
      return colo_primary_runs(buf);
  }
  return std::nullopt;
}

// The link failed with `why`. A primary whose process died ended it (its
// kernel closed or reset the connection): take over at once. A silent or
// timed-out link proves nothing — the primary may run on — so wait, as
// QEMU's secondary does, for x-colo-lost-heartbeat (in a cluster the
// orchestrator sends it once the primary's side has fenced itself).
caf::expected<destination_event>
migration_destination::impl::colo_link_failed(const caf::error& why, clock_type::time_point heard) {
  if (closing)
    return why; // cancelled or shutting down: never a takeover
  if (auto ended = colo_primary_ended())
    return *ended;
  if (colo_lost)
    return colo_take_over();
  // Ended right after the primary was last heard: its process died. Ended
  // after a silence (a reset as a cut link comes back): it may live on.
  if (main->peer_ended() && clock_type::now() - heard <= mig::colo_silent_after)
    return colo_failover("error", why);
  std::fprintf(stderr,
               "ferry: COLO secondary: the primary went silent (%s); waiting for "
               "x-colo-lost-heartbeat\n",
               describe(why).c_str());
  while (!colo_lost && !closing)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  if (closing)
    return why;
  return colo_take_over();
}

// One COLO message of the checkpoint sequence; a value when COLO ends here.
std::optional<caf::expected<destination_event>>
migration_destination::impl::colo_message(std::span<const uint8_t> buf, checkpoint_staging& staging,
                                          uint64_t& arrived) {
  auto r = mig::decode_colo(buf);
  if (!r)
    return colo_fail(describe(r.error()));
  if (auto ok = colo_x.take(*r); !ok)
    return colo_fail(describe(ok.error()));
  if (r->message == cm::checkpoint_request) {
    if (colo_compare)
      colo_compare_request();
    staging.begin(r->value);
    arrived = 0;
    if (auto ok = colo_send(cm::checkpoint_reply, r->value); !ok)
      return colo_link_failed(ok.error(), clock_type::now());
  } else if (r->message == cm::vmstate_size) {
    if (r->value != arrived)
      return colo_fail("checkpoint " + std::to_string(colo_x.checkpoint()) + " announced " +
                       std::to_string(r->value) + " pages, " + std::to_string(arrived) +
                       " arrived");
    if (auto ok = colo_send(cm::vmstate_received, colo_x.checkpoint()); !ok)
      return colo_link_failed(ok.error(), clock_type::now());
    if (auto why = commit_checkpoint(staging))
      return colo_fail(*why);
    if (auto ok = colo_send(cm::vmstate_loaded, colo_x.checkpoint()); !ok)
      return colo_link_failed(ok.error(), clock_type::now());
    ++checkpoints;
  } else if (r->message != cm::vmstate_send) {
    return colo_fail(std::string{"unexpected "} + std::string{mig::to_string(r->message)});
  }
  return std::nullopt;
}

caf::expected<destination_event> migration_destination::impl::colo() {
  checkpoint_staging staging{g.memory().pages()};
  uint64_t arrived = 0; // page entries of the checkpoint
  std::vector<uint8_t> buf;
  auto beat_sent = clock_type::now();
  auto heard = beat_sent;
  uint64_t beats = 0;
  for (;;) {
    // Idle: the primary hears from this side every heartbeat interval (while
    // it is heard itself).
    if (!main->wait_readable(static_cast<int>(mig::colo_heartbeat_interval.count()))) {
      if (colo_lost)
        return colo_take_over();
      const auto now = std::chrono::steady_clock::now();
      if (now - beat_sent >= mig::colo_heartbeat_interval &&
          now - heard <= mig::colo_silent_after) {
        beat_sent = now;
        if (auto ok = main->send(mig::record_type::heartbeat, mig::encode_heartbeat(++beats)); !ok)
          return colo_link_failed(ok.error(), heard);
      }
      if (colo_compare && now - heard <= mig::colo_silent_after)
        if (auto ok = colo_forward_output(); !ok)
          return colo_link_failed(ok.error(), heard);
      continue;
    }
    if (colo_lost && colo_x.step() != mig::colo_step::sending)
      return colo_take_over();
    auto h = main->receive_header();
    if (h) {
      auto ok = h->type == mig::record_type::pages ? read_page_record(*main, *h, buf)
                                                   : main->receive_payload(*h, buf);
      if (!ok)
        h = ok.error();
    }
    if (!h)
      return colo_link_failed(h.error(), heard);
    heard = std::chrono::steady_clock::now();
    const bool in_records = colo_x.step() == mig::colo_step::sending;
    switch (h->type) {
      case mig::record_type::heartbeat:
        break;
      case mig::record_type::colo_output:
        if (auto ok = colo_take_output(buf); !ok)
          return colo_fail(describe(ok.error()));
        break;
      case mig::record_type::abort:
        return colo_primary_runs(buf);
      case mig::record_type::colo:
        if (auto end = colo_message(buf, staging, arrived))
          return *end;
        break;
      case mig::record_type::pages: {
        if (!in_records)
          return colo_fail("page record outside a checkpoint");
        if (auto why = stage_pages(buf, staging, arrived))
          return colo_fail(*why);
        break;
      }
      case mig::record_type::sync:
        if (!in_records)
          return colo_fail("sync record outside a checkpoint");
        break;
      case mig::record_type::cpu_state:
        if (!in_records)
          return colo_fail("CPU state outside a checkpoint");
        staging.stage_cpu_state(buf);
        break;
      case mig::record_type::devices: {
        auto d = mig::decode_devices(buf);
        if (!in_records || !d)
          return colo_fail("device state outside a checkpoint, or malformed");
        source_running = d->guest_running;
        break;
      }
      case mig::record_type::digest: {
        auto d = mig::decode_digest(buf);
        if (!in_records || !d)
          return colo_fail("digest outside a checkpoint, or malformed");
        source_digest = *d;
        break;
      }
      default:
        return colo_fail(std::string{"unexpected "} + mig::to_string(h->type) + " record");
    }
  }
}

void migration_destination::colo_lost_heartbeat() {
  impl_->colo_lost = true;
  // The COLO thread takes it at its next look (it tells the primary first);
  // one stuck in a record on a silent link is cut loose.
  for (int i = 0; i < 30 && !impl_->colo_noticed; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  std::lock_guard lk{impl_->mtx};
  if (!impl_->colo_noticed && impl_->main != nullptr)
    impl_->main->interrupt();
}

} // namespace ferry
