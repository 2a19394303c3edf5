// The outgoing engine's phases: connect and handshake, setup, the passes,
// stop-and-copy, device state, hand-over.
#include "agent/migration/mapped_ram_io.hpp"
#include "agent/migration/source_engine.hpp"
#include "common/thread_name.hpp"
#include "protocol/shared_ram_check.hpp"

namespace ferry {

namespace json = boost::json;

// A new channel to the target, registered before its first exchange (so
// cancel can cut a stalled handshake), under TLS when the plan says so.
caf::expected<migration_channel*> migration_source::impl::open_channel() {
  FERRY_TRY(opened, plan.open ? plan.open() : open_outgoing(plan.target));
  migration_channel* ch = opened.get();
  {
    std::lock_guard lk{mtx};
    channels.push_back(std::move(opened));
  }
  if (plan.tls)
    if (auto ok = ch->start_tls(*plan.tls); !ok)
      return ok.error();
  return ch;
}

// The multifd channels connect, shake hands and say hello all at once, a
// thread each: a TLS handshake costs a few ms of CPU on both sides, and
// channels taken one after another would hold the first page back by all of
// them (QEMU sets its channels up concurrently too). The destination takes
// them in any order (their hellos carry the index). One failing cuts the
// others short instead of waiting out their handshakes.
caf::expected<std::vector<migration_channel*>> migration_source::impl::open_multifd(mig::hello h) {
  const size_t n = h.channel_count;
  std::vector<caf::expected<migration_channel*>> opened(n, caf::error{});
  std::atomic<bool> failed{false};
  size_t first_failed = 0; // written once, by the thread that set `failed`
  const auto open_one = [&](uint16_t index) -> caf::expected<migration_channel*> {
    if (failed || stop)
      return check_stop_error();
    FERRY_TRY(ch, open_channel());
    if (plan.zero_copy)
      if (auto ok = ch->enable_zero_copy(); !ok)
        return ok.error();
    mig::hello mine = h;
    mine.channel_index = index;
    if (auto ok = ch->send(mig::record_type::hello, mig::encode(mine)); !ok)
      return ok.error();
    return ch;
  };
  {
    std::vector<std::thread> openers;
    openers.reserve(n);
    for (size_t i = 0; i < n; ++i)
      openers.emplace_back([&, i] {
        name_this_thread("mig-connect/" + std::to_string(i));
        opened[i] = open_one(static_cast<uint16_t>(i + 1));
        if (!opened[i] && !failed.exchange(true)) {
          first_failed = i;
          std::lock_guard lk{mtx};
          for (size_t k = 1; k < channels.size(); ++k)
            channels[k]->interrupt();
        }
      });
    for (auto& t : openers)
      t.join();
  }
  if (stop)
    return check_stop_error();
  // The first failure says why (the others were cut because of it).
  if (failed)
    return opened[first_failed].error();
  std::vector<migration_channel*> out(n);
  for (size_t i = 0; i < n; ++i)
    out[i] = *opened[i];
  return out;
}

caf::expected<void> migration_source::impl::handshake() {
  if (plan.mapped_ram)
    if (auto ok = open_mapped_file(); !ok)
      return ok;
  if (auto main = open_channel(); !main)
    return main.error();
  mig::hello h;
  h.channel_count = plan.multifd ? static_cast<uint16_t>(plan.channels) : 0;
  session = random_session();
  h.session = session;
  h.flags =
    (plan.multifd ? mig::flag_multifd : 0) | (plan.validate_uuid ? mig::flag_validate_uuid : 0) |
    (plan.postcopy ? mig::flag_postcopy : 0) |
    (plan.postcopy && plan.preempt ? mig::flag_preempt : 0) |
    (plan.postcopy && plan.release_ram ? mig::flag_release_ram : 0) |
    (plan.switchover_ack ? mig::flag_switchover_ack : 0) | (plan.colo ? mig::flag_colo : 0) |
    (plan.colo && plan.colo_compare ? mig::flag_colo_compare : 0) |
    (plan.ignore_shared ? mig::flag_ignore_shared : 0) |
    (plan.mapped_ram ? mig::flag_mapped_ram : 0) |
    (plan.multifd ? static_cast<uint32_t>(plan.compress) << mig::compression_shift : 0);
  h.ram_size = g.memory().size();
  h.uuid = plan.uuid;
  if (auto ok = channels[0]->send(mig::record_type::hello, mig::encode(h)); !ok)
    return ok;
  if (plan.target.bidirectional()) {
    std::vector<uint8_t> buf;
    FERRY_TRY(rh, channels[0]->receive(buf));
    if (rh.type != mig::record_type::hello_ack)
      return make_ferry_error(errc::system_error, std::string{"destination answered "} +
                                                    mig::to_string(rh.type) +
                                                    " to the migration handshake");
    FERRY_TRY(st, mig::decode_status(buf));
    if (st.code != 0)
      return make_ferry_error(errc::invalid_argument,
                              "the destination refused the migration: " + st.text);
  }
  FERRY_TRY(multifd, open_multifd(h));
  if (plan.postcopy && plan.preempt)
    if (auto ok = open_preempt(h); !ok)
      return ok;
  auto on_error = [this](const caf::error& e) { note_failure(e); };
  page_sender::options opt{plan.detect_zero,
                           plan.multifd,
                           hooks.threads,
                           plan.multifd ? plan.compress : mig::compression::none,
                           plan.compress_level,
                           plan.xbzrle ? plan.xbzrle_cache_size : 0,
                           &digest,
                           plan.multifd && plan.zero_copy};
  if (plan.multifd) {
    for (size_t i = 1; i <= h.channel_count; ++i)
      senders.push_back(std::make_unique<page_sender>("mig-send/" + std::to_string(i - 1),
                                                      *multifd[i - 1], g.memory(), opt, limiter,
                                                      ctr, stop, on_error));
  } else {
    senders.push_back(std::make_unique<page_sender>("mig-send", *channels[0], g.memory(), opt,
                                                    limiter, ctr, stop, on_error));
  }
  return {};
}

caf::expected<size_t> migration_source::impl::send_bitmap(const dirty_bitmap& pages, uint64_t pass,
                                                          const std::atomic<bool>* stop_early) {
  if (plan.mapped_ram) {
    if (auto ok = write_mapped_pass(pages); !ok)
      return ok.error();
    return pages.word_count();
  }
  std::vector<uint64_t> pfns;
  size_t stopped_at = pages.word_count();
  for (size_t w0 = 0; w0 < pages.word_count(); w0 += stripe_words) {
    if (stop)
      return check_stop().error();
    if (stop_early != nullptr && *stop_early) {
      stopped_at = w0;
      break;
    }
    pfns.clear();
    for (size_t w = w0; w < std::min(w0 + stripe_words, pages.word_count()); ++w) {
      uint64_t bits = pages.word(w);
      while (bits != 0) {
        pfns.push_back(w * 64 + static_cast<uint64_t>(__builtin_ctzll(bits)));
        bits &= bits - 1;
      }
    }
    if (!pfns.empty())
      senders[(w0 / stripe_words) % senders.size()]->push_pages(pfns);
  }
  for (auto& s : senders)
    s->push_sync(pass);
  for (auto& s : senders)
    s->wait_idle();
  if (auto ok = check_stop(); !ok)
    return ok.error();
  return stopped_at;
}

caf::expected<source_event> migration_source::impl::run_phase(source_phase p) {
  switch (p) {
    case source_phase::connect:
      return connect();
    case source_phase::setup:
      return setup();
    case source_phase::iterate:
      return iterate();
    case source_phase::switchover:
      return switchover();
    case source_phase::device_state:
      return device_state();
    case source_phase::handover:
      return handover();
    case source_phase::postcopy_switch:
      return postcopy_switch();
    case source_phase::postcopy:
      return postcopy();
    case source_phase::postcopy_paused:
      return postcopy_paused();
    case source_phase::postcopy_recover:
      return postcopy_recover();
    case source_phase::colo:
      return colo();
    default:
      return make_ferry_error(errc::bad_run_state, "no work in phase " + std::string{to_string(p)});
  }
}

// The engine walks its phases: each phase's work yields the event that moves
// it on; a failure becomes `error` (or `cancel` when it was cancelled).
// After postcopy's go a failure is a broken link instead: the engine pauses
// and waits to be resumed.
caf::expected<void> migration_source::impl::execute() {
  source_phase p = source_phase::connect;
  while (!terminal(p)) {
    auto ev = run_phase(p);
    source_event e = ev ? *ev : cancelled ? source_event::cancel : source_event::error;
    if (e == source_event::error && postcopy_committed)
      e = source_event::link_lost;
    auto next = step(p, e);
    if (!next)
      return next.error(); // a phase produced an event its table forbids
    p = *next;
    phase = p;
    if (e == source_event::link_lost) {
      after_link_lost(ev.error());
      continue;
    }
    if (!ev)
      return ev.error();
  }
  return {};
}

caf::expected<source_event> migration_source::impl::connect() {
  if (auto ok = handshake(); !ok)
    return ok.error();
  return source_event::connected;
}

caf::expected<source_event> migration_source::impl::setup() {
  if (plan.background_snapshot)
    return background_setup();
  // cpr-reboot: the guest stops before anything is saved, so no page can
  // change behind the stream and no dirty log is needed beyond one pass.
  if (plan.stop_first)
    stop_guest();
  // x-ignore-shared: the destination maps the same file; no page goes, no
  // dirty log runs (the guest's writes land in the file either side sees).
  if (plan.ignore_shared) {
    todo = dirty_bitmap{g.memory().pages()};
    setup_ms = ms_since(start);
    if (!hooks.step(migration_event::setup_done))
      return check_stop_error();
    return source_event::setup_done;
  }
  const uint64_t pages = g.memory().pages();
  todo = dirty_bitmap{pages};
  // Tracking starts before the first pass reads anything; what the tracker
  // has collected so far is dropped, since that pass sends every page.
  dirty_tracker& log = g.dirty_log();
  if (auto ok = log.start(); !ok)
    return ok.error();
  tracking = true;
  if (auto ok = log.sync(todo); !ok)
    return ok.error();
  setup_ms = ms_since(start);
  if (!hooks.step(migration_event::setup_done))
    return check_stop_error();
  todo.set_all();
  // Holes of the RAM file are zero and untouched: the first pass need not
  // read them (a read would allocate and clear each). A write to one after
  // tracking started shows in the next sync. With zero-page-detection none
  // every page goes with its data.
  holes = dirty_bitmap{pages};
  if (plan.detect_zero) {
    holes.set_all();
    g.memory().for_each_data_run([&](uint64_t first, uint64_t end) {
      for (uint64_t p = first; p < end; ++p)
        holes.clear_page(p);
    });
    for (auto& s : senders)
      s->set_known_zero(&holes);
  }
  return source_event::setup_done;
}

// One pass over `todo`; then the next dirty set and whether it fits.
caf::expected<source_event> migration_source::impl::iterate() {
  if (plan.background_snapshot)
    return background_walk();
  const uint64_t pass = ++passes;
  const auto pass_start = clock_type::now();
  const uint64_t sent_before = bytes_sent();
  const uint64_t pass_pages = todo.count();
  const xbzrle_mark xbz_before = xbzrle_now();
  if (plan.xbzrle && pass >= 2)
    for (auto& s : senders)
      s->use_xbzrle(xbzrle_cache_size / senders.size());
  pass_sent_before = sent_before;
  pass_todo_pages = pass_pages;
  pass_done_before = pages_done();
  pass_start_ns = pass_start.time_since_epoch().count();
  in_pass = true;
  auto sent = send_bitmap(todo, pass, plan.postcopy ? &postcopy_requested : nullptr);
  in_pass = false;
  if (!sent)
    return sent.error();
  // A pass cut short for postcopy: its unsent pages are still owed.
  dirty_bitmap unsent{0};
  if (*sent < todo.word_count()) {
    unsent = dirty_bitmap{todo.pages()};
    for (size_t w = *sent; w < todo.word_count(); ++w)
      for (uint64_t bits = todo.word(w); bits != 0; bits &= bits - 1)
        unsent.set(w * 64 + static_cast<uint64_t>(__builtin_ctzll(bits)));
  }
  xbzrle_rates(xbz_before);
  for (auto& s : senders)
    s->set_known_zero(nullptr);
  const double secs = std::chrono::duration<double>(clock_type::now() - pass_start).count();
  if (secs >= 0.001) {
    bandwidth = static_cast<uint64_t>(static_cast<double>(bytes_sent() - sent_before) / secs);
    pages_per_second = static_cast<uint64_t>(static_cast<double>(pass_pages) / secs);
  }
  todo.clear();
  if (tracking)
    if (auto ok = g.dirty_log().sync(todo); !ok)
      return ok.error();
  if (unsent.pages() != 0)
    todo.merge(unsent);
  const uint64_t syncs = ++ctr.sync_count;
  emit("MIGRATION_PASS", json::object{{"pass", syncs}});
  const uint64_t dirty = todo.count();
  remaining_bytes = dirty * mig::page_size;
  if ((plan.auto_converge || plan.dirty_limit) && pass >= 2)
    maybe_throttle(bytes_sent() - sent_before, dirty * mig::page_size);
  const double since_start = std::chrono::duration<double>(clock_type::now() - pass_start).count();
  dirty_pages_rate =
    since_start > 0 ? static_cast<uint64_t>(static_cast<double>(dirty) / since_start) : 0;
  const uint64_t expected = expected_downtime(dirty, pass);
  expected_downtime_ms = expected;
  if (expected <= downtime_limit_ms && unsent.pages() == 0)
    return source_event::pass_converged;
  if (stop)
    return check_stop_error();
  // QEMU's order too: a pass that leaves little enough completes as
  // precopy even when postcopy was asked for.
  if (postcopy_requested)
    return source_event::postcopy_requested;
  return source_event::pass_again;
}

// The guest stops for good (stop-and-copy, or the postcopy switch): what
// it dirtied meanwhile goes at full speed.
void migration_source::impl::stop_guest() {
  if (paused) // held already: cpr-reboot stopped it at the start
    return;
  // auto-converge's brief pauses are not the guest's run state: end the
  // throttle first.
  throttle.reset();
  const bool was_running = g.state() == run_state::running;
  guest_was_running = was_running;
  paused = g.pause();
  ctr.guest_stopped = true;
  in_switchover = true;
  limiter.set_limit(0);
  downtime_start = clock_type::now();
  if (was_running)
    hooks.emit(qmp::event("STOP"));
}

// Every sender has written all it was given; multifd channels end (their
// receivers finish), and the main channel is this thread's alone.
caf::expected<void> migration_source::impl::drain_senders() {
  if (plan.multifd) {
    for (auto& s : senders)
      s->push_end();
    for (auto& s : senders)
      s->wait_idle();
    if (stop)
      return check_stop_error();
  }
  senders.clear();
  return {};
}

// switchover-ack: the destination's word that the guest may stop now (sent
// once its channels are up; read here, where the source first needs it).
caf::expected<void> migration_source::impl::await_switchover_ack() {
  if (!plan.switchover_ack || switchover_acked)
    return {};
  std::vector<uint8_t> buf;
  FERRY_TRY(h, channels[0]->receive(buf));
  if (h.type != mig::record_type::switchover_ack)
    return make_ferry_error(errc::system_error, std::string{"the destination sent "} +
                                                  mig::to_string(h.type) +
                                                  " instead of its switchover-ack");
  switchover_acked = true;
  return {};
}

// Both switches begin alike: the destination's ack (switchover-ack), the
// guest stopped, the dirty log's last sync into `todo`.
caf::expected<void> migration_source::impl::stop_and_sync() {
  if (auto ok = await_switchover_ack(); !ok)
    return ok;
  stop_guest();
  if (tracking)
    if (auto ok = g.dirty_log().sync(todo); !ok)
      return ok;
  ++ctr.sync_count;
  return {};
}

// Stop-and-copy: the guest stops, the last dirty pages go at full speed.
caf::expected<source_event> migration_source::impl::switchover() {
  // background-snapshot: every page went in the walk, as it was at the
  // start; the guest never stops.
  if (plan.background_snapshot) {
    background_end();
    return source_event::dirty_sent;
  }
  if (auto ok = stop_and_sync(); !ok)
    return ok.error();
  dirty_tracker& log = g.dirty_log();
  if (auto ok = send_bitmap(todo, ctr.sync_count); !ok)
    return ok.error();
  remaining_bytes = 0;
  if (tracking)
    log.stop();
  tracking = false;
  if (plan.mapped_ram)
    if (auto ok = finish_mapped_ram(mapped_fd.get(), mapped_layout, mapped_bits); !ok)
      return ok.error();

  if (plan.pause_before_switchover) {
    if (!hooks.step(migration_event::pause_switchover))
      return check_stop_error();
    while (!resume && !stop)
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    if (stop)
      return check_stop_error();
  }
  if (auto ok = drain_senders(); !ok)
    return ok.error();
  return source_event::dirty_sent;
}

caf::expected<source_event> migration_source::impl::device_state() {
  if (auto ok = send_state(); !ok)
    return ok.error();
  if (auto ok = channels[0]->send(mig::record_type::end, std::span<const uint8_t>{}); !ok)
    return ok.error();
  ctr.add_sent(mig::header_size, false);
  return source_event::state_sent;
}

// CPU and device state, then the digest of every page sent.
caf::expected<void> migration_source::impl::send_state() {
  auto& main = *channels[0];
  // background-snapshot: the state as it was when the snapshot began.
  FERRY_TRY(cpu, plan.background_snapshot ? caf::expected<std::vector<uint8_t>>{bg_cpu}
                                          : g.save_cpu_state());
  if (auto ok = main.send(mig::record_type::cpu_state, cpu); !ok)
    return ok.error();
  // No emulated device holds state yet (serial output is write-only, port
  // 0x92 is stateless): the section says so, and carries the run state.
  const auto devices = mig::encode(mig::device_section{guest_was_running});
  if (auto ok = main.send(mig::record_type::devices, devices); !ok)
    return ok.error();
  if (plan.ignore_shared) {
    // The guest is stopped: its pages sampled now are what the destination
    // must find in the file it maps.
    std::vector<mig::shared_page_sample> samples;
    std::array<uint8_t, mig::page_size> page{};
    for (uint64_t pfn : mig::shared_sample_pages(g.memory().pages())) {
      if (auto ok = g.memory().read_shared_page(pfn, page.data()); !ok)
        return ok.error();
      samples.push_back({pfn, mig::page_hash(page.data())});
    }
    const auto check = mig::encode_shared_ram(samples);
    if (auto ok = main.send(mig::record_type::shared_ram, check); !ok)
      return ok.error();
    ctr.add_sent(mig::header_size + check.size(), false);
  }
  // Every page is out (the senders are idle): what they carried, for the
  // destination to prove it holds exactly that.
  const auto proof = mig::encode_digest(digest.value());
  if (auto ok = main.send(mig::record_type::digest, proof); !ok)
    return ok.error();
  ctr.add_sent(3 * mig::header_size + cpu.size() + devices.size() + proof.size(), false);
  return {};
}

// The destination's answer to the state: ready, or why it failed to load.
caf::expected<void> migration_source::impl::await_ready() {
  std::vector<uint8_t> buf;
  FERRY_TRY(rh, channels[0]->receive(buf));
  FERRY_TRY(st, mig::decode_status(buf));
  if (rh.type != mig::record_type::ready || st.code != 0)
    return make_ferry_error(errc::system_error,
                            "the destination failed to load the guest: " + st.text);
  return {};
}

// The destination has everything: it says ready, the owner takes the stopped
// guest, and only then does the destination hear go.
caf::expected<source_event> migration_source::impl::handover() {
  if (plan.colo)
    return colo_begin();
  auto& main = *channels[0];
  if (!plan.target.bidirectional()) {
    if (auto ok = main.finish(); !ok)
      return ok.error();
  } else if (auto ok = await_ready(); !ok) {
    return ok.error();
  }
  if (!plan.background_snapshot) // its downtime was the pause at the start
    downtime_ms = ms_since(downtime_start);
  total_ms = ms_since(start);
  if (!hooks.complete(paused)) {
    // Cancelled at the last moment: the destination must not start it.
    (void) main.send(mig::record_type::abort, mig::encode(mig::status_msg{1, "cancelled"}));
    cancelled = true;
    return cancelled_error();
  }
  if (plan.target.bidirectional())
    (void) main.send(mig::record_type::go, mig::encode(mig::status_msg{}));
  return source_event::destination_ready;
}

} // namespace ferry
