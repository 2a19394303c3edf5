// Who may connect to an incoming migration's port, and what both sides must
// agree on before any page: the main channel admitted (TLS, tls-authz), the
// hello checked, the multifd channels accepted.
#include "agent/migration/destination_impl.hpp"

#include <cstdio>

namespace ferry {

using destination_detail::accept_slice_ms;
using destination_detail::channel_accept_timeout_ms;
using destination_detail::hex16;

// With TLS and a pinned peer (tls-authz), the port admits only a peer that
// completes the handshake and proves that identity: anything else (a
// plaintext client, another host's certificate, a scanner) is dropped and the
// port keeps waiting for the real source, the guest undisturbed. A peer with
// a good certificate for the wrong identity hears why (as QEMU's refused
// source does). Without a pinned peer, as QEMU, the first connection is the
// migration and its failure fails it.
caf::expected<destination_event> migration_destination::impl::accept_main() {
  for (;;) {
    FERRY_TRY(main_ch, listener->accept(-1));
    migration_channel* ch = main_ch.get();
    {
      // Registered first, so a cancel can cut a peer stalling its handshake.
      std::lock_guard lk{mtx};
      channels.push_back(std::move(main_ch));
    }
    // The settings in force when the source connects (as QEMU: they may
    // change after migrate-incoming).
    if (plan.refresh)
      if (auto bad = plan.refresh(plan))
        return refuse(*bad);
    if (plan.mapped_ram)
      if (auto ok = open_mapped_file(ch); !ok)
        return refuse(describe(ok.error()));
    if (!plan.tls) {
      main = ch;
      return destination_event::accepted;
    }
    auto tls = ch->start_tls(*plan.tls);
    if (!tls && !plan.check_authz) {
      main = ch;
      return tls.error();
    }
    std::optional<std::string> why = tls ? authz_denied(*ch) : describe(tls.error());
    if (!why) {
      main = ch;
      return destination_event::accepted;
    }
    // Said before the peer hears it: whoever watches the refused source
    // fail finds the reason here already.
    std::fprintf(stderr, "ferry: incoming migration: refused a connection: %s\n", why->c_str());
    if (tls && ch->wait_readable(2000)) {
      std::vector<uint8_t> buf;
      if (auto h = ch->receive(buf);
          h && h->type == mig::record_type::hello &&
          ch->send(mig::record_type::hello_ack, mig::encode(mig::status_msg{1, *why})))
        (void) ch->wait_readable(1000); // its close: it has read why (a second at most)
    }
    {
      std::lock_guard lk{mtx};
      channels.pop_back(); // closes it
    }
    if (stop)
      return refuse("the incoming migration was stopped");
  }
}

namespace {

// A capability both sides must agree on, set on one side only.
std::string capability_differs(std::string_view name, bool source, bool destination) {
  return "capability " + std::string{name} + " is " + (source ? "on" : "off") +
         " on the source but " + (destination ? "on" : "off") + " on the destination";
}

} // namespace

// Everything the two sides must agree on, checked before any page.
std::string migration_destination::impl::disagreement() const {
  const bool src_multifd = (hello.flags & mig::flag_multifd) != 0;
  const auto src_compress =
    static_cast<mig::compression>((hello.flags & mig::compression_mask) >> mig::compression_shift);
  if (hello.channel_index != 0)
    return "the first channel is multifd channel " + std::to_string(hello.channel_index);
  if (hello.page_size != mig::page_size)
    return "page size " + std::to_string(hello.page_size) + " differs from " +
           std::to_string(mig::page_size);
  if (hello.ram_size != g.memory().size())
    return "guest RAM size differs: source " + std::to_string(hello.ram_size >> 20) +
           " MiB, destination " + std::to_string(g.memory().size() >> 20) + " MiB";
  if (src_multifd != plan.multifd)
    return capability_differs("multifd", src_multifd, plan.multifd);
  if (src_multifd && hello.channel_count != plan.channels)
    return "multifd-channels differ: source " + std::to_string(hello.channel_count) +
           ", destination " + std::to_string(plan.channels);
  if (src_multifd && src_compress != plan.compress)
    return std::string{"multifd-compression differs: source "} + mig::to_string(src_compress) +
           ", destination " + mig::to_string(plan.compress);
  const bool src_postcopy = (hello.flags & mig::flag_postcopy) != 0;
  if (src_postcopy != plan.postcopy)
    return capability_differs("postcopy-ram", src_postcopy, plan.postcopy);
  const bool src_preempt = (hello.flags & mig::flag_preempt) != 0;
  if (src_preempt != (plan.postcopy && plan.preempt))
    return capability_differs("postcopy-preempt", src_preempt, plan.postcopy && plan.preempt);
  const bool src_ack = (hello.flags & mig::flag_switchover_ack) != 0;
  if (src_ack != plan.switchover_ack)
    return capability_differs("switchover-ack", src_ack, plan.switchover_ack);
  const bool src_mapped = (hello.flags & mig::flag_mapped_ram) != 0;
  if (src_mapped != plan.mapped_ram)
    return capability_differs("mapped-ram", src_mapped, plan.mapped_ram);
  const bool src_ignore_shared = (hello.flags & mig::flag_ignore_shared) != 0;
  if (src_ignore_shared && !plan.ignore_shared)
    return capability_differs("x-ignore-shared", true, false);
  if (src_ignore_shared && !g.memory().shared_file())
    return "x-ignore-shared: the source sends no RAM, but this guest's RAM is not a shared file "
           "(memory-backend-file,share=on on the source's mem-path)";
  const bool src_colo = (hello.flags & mig::flag_colo) != 0;
  if (src_colo != plan.colo)
    return capability_differs("x-colo", src_colo, plan.colo);
  if (src_colo && !plan.from.bidirectional())
    return "COLO needs a socket transport (tcp: or unix:): checkpoints are answered on it";
  if (src_ack && !plan.from.bidirectional())
    return "switchover-ack needs a socket transport (tcp: or unix:)";
  if (src_postcopy && !plan.from.bidirectional())
    return "postcopy needs a socket transport (tcp: or unix:): pages are asked for on it";
  if (src_postcopy && g.memory().backing_page_size() != 4096)
    return "postcopy is not possible on this destination: its guest RAM is in huge pages "
           "(pages are placed 4 KiB at a time)";
  if (src_postcopy) {
    // Whether this guest's RAM can take pages while it runs: registered
    // for a moment (before any page arrives) and let go.
    auto probe = userfault_region::create(g.memory().data(), 1);
    if (!probe)
      return "postcopy is not possible on this destination: " + describe(probe.error());
  }
  if ((hello.flags & mig::flag_validate_uuid) != 0 && hello.uuid != plan.uuid)
    return "UUID received is " + hex16(hello.uuid) + " and local is " + hex16(plan.uuid);
  if (auto denied = authz_denied(*main))
    return *denied;
  return {};
}

caf::expected<destination_event> migration_destination::impl::handshake() {
  // (Settings read and TLS up on the main channel: accept_main admitted it.)
  std::vector<uint8_t> buf;
  FERRY_TRY(h, check_hello(*main, buf));
  hello = h;
  const std::string refusal = disagreement();
  if (plan.from.bidirectional()) {
    const mig::status_msg ack{refusal.empty() ? 0u : 1u, refusal};
    if (auto ok = main->send(mig::record_type::hello_ack, mig::encode(ack)); !ok)
      return ok.error();
  }
  if (!refusal.empty())
    return refuse(refusal);
  multifd = (hello.flags & mig::flag_multifd) != 0;
  postcopy = (hello.flags & mig::flag_postcopy) != 0;
  compress = multifd ? plan.compress : mig::compression::none;
  if (!hooks.step(migration_event::setup_done))
    return refuse("the incoming migration was stopped");
  return destination_event::agreed;
}

// The next multifd channel. The main channel is idle meanwhile, so anything
// on it — most often its end, a source that gave up — ends the wait at once
// instead of after the accept timeout.
caf::expected<std::unique_ptr<migration_channel>> migration_destination::impl::accept_channel() {
  const auto deadline = clock_type::now() + std::chrono::milliseconds(channel_accept_timeout_ms);
  for (;;) {
    auto ch = listener->accept(accept_slice_ms);
    if (ch || stop || clock_type::now() > deadline)
      return ch;
    if (main->wait_readable(0)) {
      std::vector<uint8_t> buf;
      FERRY_TRY(h, main->receive(buf));
      return refuse(std::string{"unexpected "} + mig::to_string(h.type) +
                    " record before the multifd channels connected");
    }
  }
}

// The next channel of this migration, TLS up and its peer let in: a
// stranger while the channels come up is dropped when a peer is pinned
// (nullptr: go on waiting).
caf::expected<migration_channel*> migration_destination::impl::admit_channel() {
  FERRY_TRY(ch, accept_channel());
  // Registered before anything is read from it, so a peer that connects
  // and stalls can still be cut off (cancel, failure, shutdown).
  migration_channel* raw = ch.get();
  {
    std::lock_guard lk{mtx};
    channels.push_back(std::move(ch));
  }
  if (plan.tls) {
    auto ok = raw->start_tls(*plan.tls);
    const auto why = ok ? authz_denied(*raw) : describe(ok.error());
    if (why && !plan.check_authz)
      return ok.error();
    if (why) {
      {
        std::lock_guard lk{mtx};
        channels.pop_back();
      }
      std::fprintf(stderr, "ferry: incoming migration: refused a channel: %s\n", why->c_str());
      return nullptr;
    }
  }
  return raw;
}

// postcopy-preempt's channel (again on a resume): its hello names it.
caf::expected<migration_channel*> migration_destination::impl::accept_preempt(bool resume) {
  std::vector<uint8_t> buf;
  for (;;) {
    FERRY_TRY(raw, admit_channel());
    if (raw == nullptr)
      continue;
    FERRY_TRY(h, check_hello(*raw, buf));
    if (h.session != hello.session || h.channel_index != mig::preempt_channel_index ||
        ((h.flags & mig::flag_resume) != 0) != resume)
      return refuse("a channel that is not this migration's preempt channel connected");
    return raw;
  }
}

// multifd channels, each checked and then read by its receiving thread; then
// the preempt channel (the source opens them in that order).
caf::expected<destination_event> migration_destination::impl::open_channels() {
  std::vector<uint8_t> buf;
  std::vector<bool> seen(hello.channel_count + 1, false);
  for (uint16_t n = 0; multifd && n < hello.channel_count;) {
    // With a pinned peer, an intruder connecting while the channels come up
    // is dropped; the source's own channels still get in.
    FERRY_TRY(raw, admit_channel());
    if (raw == nullptr)
      continue;
    FERRY_TRY(h, check_hello(*raw, buf));
    if (h.session != hello.session)
      return refuse("a multifd channel of another migration connected");
    if (h.channel_index == 0 || h.channel_index > hello.channel_count || seen[h.channel_index])
      return refuse("bad or repeated multifd channel index " + std::to_string(h.channel_index));
    seen[h.channel_index] = true;
    receivers.emplace_back([this, raw, idx = h.channel_index] {
      const auto registered =
        name_migration_thread(hooks.threads, "mig-recv/" + std::to_string(idx - 1));
      if (auto ok = receive_channel(*raw); !ok)
        note_failure(ok.error());
    });
    ++n;
  }
  if (postcopy && plan.preempt) {
    FERRY_TRY(p, accept_preempt(false));
    preempt = p;
  }
  // No device here needs time before the switch-over: the ack goes at once.
  if (plan.switchover_ack)
    if (auto ok = main->send(mig::record_type::switchover_ack, std::span<const uint8_t>{}); !ok)
      return ok.error();
  return destination_event::channels_up;
}

} // namespace ferry
