#include "agent/migration/migration_destination.hpp"

#include "agent/migration/migration_counters.hpp"
#include "agent/transport/migration_channel.hpp"
#include "common/error.hpp"

#include <boost/json.hpp>

#include <chrono>
#include <cstring>
#include <mutex>
#include <thread>

namespace ferry {

namespace json = boost::json;
using clock_type = std::chrono::steady_clock;

namespace {

constexpr int channel_accept_timeout_ms = 30'000;

caf::error refuse(std::string why) {
  return make_ferry_error(errc::invalid_argument, std::move(why));
}

std::string hex16(const std::array<uint8_t, 16>& u) {
  static const char* digits = "0123456789abcdef";
  std::string s;
  for (size_t i = 0; i < u.size(); ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10)
      s += '-';
    s += digits[u[i] >> 4];
    s += digits[u[i] & 15];
  }
  return s;
}

} // namespace

struct migration_destination::impl {
  guest& g;
  incoming_migration plan;
  migration_hooks hooks;
  std::unique_ptr<migration_listener> listener;

  std::atomic<bool> stop{false};
  migration_counters ctr;
  mig::compression compress = mig::compression::none; // as agreed in the hello
  // One bit per page that may hold data: pages never written are known to
  // be zero, so zero pages in the stream need not touch them.
  std::vector<std::atomic<uint64_t>> maybe_nonzero;

  mutable std::mutex mtx; // error, channels
  std::string error;
  std::vector<std::unique_ptr<migration_channel>> channels;
  std::atomic<uint64_t> total_ms{0};
  std::atomic<uint64_t> received_closed{0}; // bytes of channels already closed
  clock_type::time_point start = clock_type::now();
  std::thread thread;

  impl(guest& gu, incoming_migration p, migration_hooks h)
    : g(gu), plan(std::move(p)), hooks(std::move(h)),
      maybe_nonzero((g.memory().pages() + 63) / 64) {}

  void note_failure(const caf::error& e) {
    {
      std::lock_guard lk{mtx};
      if (error.empty())
        error = describe(e);
    }
    stop = true;
    listener->interrupt();
    std::lock_guard lk{mtx};
    for (auto& c : channels)
      c->interrupt();
  }

  void mark_present_data();
  // tls-authz: why the TLS peer on `ch` is not let in, if it is not.
  std::optional<std::string> authz_denied(const migration_channel& ch) const {
    if (!plan.tls || !plan.check_authz)
      return std::nullopt;
    const std::string dn = ch.peer_dn();
    if (plan.authz_identity && dn == *plan.authz_identity)
      return std::nullopt;
    return "TLS x509 authz check for " + (dn.empty() ? std::string{"(no certificate)"} : dn) +
           " is denied";
  }
  caf::expected<mig::hello> check_hello(migration_channel& ch, std::vector<uint8_t>& buf);
  caf::expected<void> apply(std::span<const uint8_t> payload);
  caf::expected<void> apply_deltas(std::span<const uint8_t> payload); // XBZRLE
  caf::expected<void> receive_channel(migration_channel& ch);
  caf::expected<void> execute();
  void run();
};

void migration_destination::impl::mark_present_data() {
  g.memory().for_each_data_run([&](uint64_t first, uint64_t end) {
    for (uint64_t p = first; p < end; ++p)
      maybe_nonzero[p / 64].fetch_or(1ull << (p % 64), std::memory_order_relaxed);
  });
}

caf::expected<mig::hello> migration_destination::impl::check_hello(migration_channel& ch,
                                                                   std::vector<uint8_t>& buf) {
  FERRY_TRY(h, ch.receive(buf));
  if (h.type != mig::record_type::hello)
    return refuse(std::string{"expected a hello record, got "} + mig::to_string(h.type));
  return mig::decode_hello(buf);
}

caf::expected<void> migration_destination::impl::apply(std::span<const uint8_t> payload) {
  FERRY_TRY(b, mig::decode_pages(payload, g.memory().pages()));
  mig::apply_pages(b, g.memory().bytes(), maybe_nonzero);
  ctr.normal_pages.fetch_add(b.count - b.zero_pages, std::memory_order_relaxed);
  ctr.zero_pages.fetch_add(b.zero_pages, std::memory_order_relaxed);
  return {};
}

caf::expected<void> migration_destination::impl::apply_deltas(std::span<const uint8_t> payload) {
  FERRY_TRY(b, mig::decode_xbzrle(payload, g.memory().pages()));
  mig::apply_xbzrle(b, g.memory().bytes(), maybe_nonzero);
  ctr.normal_pages.fetch_add(b.count, std::memory_order_relaxed);
  return {};
}

caf::expected<void> migration_destination::impl::receive_channel(migration_channel& ch) {
  std::vector<uint8_t> buf;
  std::vector<uint8_t> plain;
  for (;;) {
    FERRY_TRY(h, ch.receive(buf));
    switch (h.type) {
      case mig::record_type::pages:
        if (compress != mig::compression::none)
          return refuse("plain page record on a compressed multifd channel");
        if (auto ok = apply(buf); !ok)
          return ok;
        break;
      case mig::record_type::compressed_pages:
        if (auto ok = mig::decompress_pages(compress, buf, plain); !ok)
          return ok;
        if (auto ok = apply(plain); !ok)
          return ok;
        break;
      case mig::record_type::sync: {
        auto n = mig::decode_sync(buf);
        if (!n)
          return n.error();
        ctr.sync_count = *n; // every channel carries the same passes
        break;
      }
      case mig::record_type::end:
        return {};
      default:
        return refuse(std::string{"unexpected "} + mig::to_string(h.type) +
                      " record on a multifd channel");
    }
  }
}

caf::expected<void> migration_destination::impl::execute() {
  FERRY_TRY(main_ch, listener->accept(-1));
  migration_channel* main = main_ch.get();
  {
    std::lock_guard lk{mtx};
    channels.push_back(std::move(main_ch));
  }
  if (plan.refresh)
    if (auto why = plan.refresh(plan))
      return refuse(*why);
  if (plan.tls)
    if (auto ok = main->start_tls(*plan.tls); !ok)
      return ok;
  std::vector<uint8_t> buf;
  FERRY_TRY(hello, check_hello(*main, buf));
  // Everything the two sides must agree on, checked before any page.
  std::string refusal;
  const bool src_multifd = (hello.flags & mig::flag_multifd) != 0;
  if (hello.channel_index != 0)
    refusal = "the first channel is multifd channel " + std::to_string(hello.channel_index);
  else if (hello.page_size != mig::page_size)
    refusal = "page size " + std::to_string(hello.page_size) + " differs from " +
              std::to_string(mig::page_size);
  else if (hello.ram_size != g.memory().size())
    refusal = "guest RAM size differs: source " + std::to_string(hello.ram_size >> 20) +
              " MiB, destination " + std::to_string(g.memory().size() >> 20) + " MiB";
  else if (src_multifd != plan.multifd)
    refusal = std::string{"capability multifd is "} + (src_multifd ? "on" : "off") +
              " on the source but " + (plan.multifd ? "on" : "off") + " on the destination";
  else if (src_multifd && hello.channel_count != plan.channels)
    refusal = "multifd-channels differ: source " + std::to_string(hello.channel_count) +
              ", destination " + std::to_string(plan.channels);
  else if (src_multifd && (hello.flags & mig::compression_mask) >> mig::compression_shift !=
                            static_cast<uint32_t>(plan.compress))
    refusal = std::string{"multifd-compression differs: source "} +
              mig::to_string(static_cast<mig::compression>((hello.flags & mig::compression_mask) >>
                                                           mig::compression_shift)) +
              ", destination " + mig::to_string(plan.compress);
  else if ((hello.flags & mig::flag_validate_uuid) != 0 && hello.uuid != plan.uuid)
    refusal = "UUID received is " + hex16(hello.uuid) + " and local is " + hex16(plan.uuid);
  else if (auto denied = authz_denied(*main))
    refusal = *denied;
  if (plan.from.bidirectional()) {
    const mig::status_msg ack{refusal.empty() ? 0u : 1u, refusal};
    if (auto ok = main->send(mig::record_type::hello_ack, mig::encode(ack)); !ok)
      return ok;
  }
  if (!refusal.empty())
    return refuse(refusal);
  compress = src_multifd ? plan.compress : mig::compression::none;
  if (!hooks.step(migration_event::setup_done))
    return refuse("the incoming migration was stopped");

  // multifd channels, each on its receiving thread.
  std::vector<std::thread> receivers;
  auto join_all = [&] {
    for (auto& t : receivers)
      t.join();
    receivers.clear();
  };
  if (src_multifd) {
    std::vector<bool> seen(hello.channel_count + 1, false);
    for (uint16_t n = 0; n < hello.channel_count; ++n) {
      auto ch = listener->accept(channel_accept_timeout_ms);
      if (!ch) {
        note_failure(ch.error());
        join_all();
        return ch.error();
      }
      // Registered before anything is read from it, so a peer that connects
      // and stalls can still be cut off (cancel, failure, shutdown).
      migration_channel* raw = ch->get();
      {
        std::lock_guard lk{mtx};
        channels.push_back(std::move(*ch));
      }
      caf::error bad;
      if (plan.tls)
        if (auto ok = raw->start_tls(*plan.tls); !ok)
          bad = ok.error();
      if (!bad)
        if (auto denied = authz_denied(*raw))
          bad = refuse(*denied);
      auto h = bad ? caf::expected<mig::hello>{bad} : check_hello(*raw, buf);
      if (!h)
        bad = h.error();
      else if (h->session != hello.session)
        bad = refuse("a multifd channel of another migration connected");
      else if (h->channel_index == 0 || h->channel_index > hello.channel_count ||
               seen[h->channel_index])
        bad = refuse("bad or repeated multifd channel index " + std::to_string(h->channel_index));
      if (bad) {
        note_failure(bad);
        join_all();
        return bad;
      }
      seen[h->channel_index] = true;
      receivers.emplace_back([this, raw, idx = h->channel_index] {
        const auto registered =
          name_migration_thread(hooks.threads, "mig-recv/" + std::to_string(idx - 1));
        if (auto ok = receive_channel(*raw); !ok)
          note_failure(ok.error());
      });
    }
  }

  // The main channel: pages without multifd, then CPU and device state.
  std::vector<uint8_t> cpu;
  bool devices = false;
  for (bool more = true; more;) {
    auto h = main->receive(buf);
    if (!h) {
      note_failure(h.error());
      break;
    }
    caf::expected<void> ok{};
    switch (h->type) {
      case mig::record_type::pages:
        ok = src_multifd ? refuse("page record on the main channel of a multifd migration")
                         : apply(buf);
        break;
      case mig::record_type::xbzrle_pages:
        // XBZRLE and multifd exclude each other (migrate-set-capabilities).
        ok = src_multifd ? refuse("XBZRLE record on the main channel of a multifd migration")
                         : apply_deltas(buf);
        break;
      case mig::record_type::sync:
        if (auto n = mig::decode_sync(buf); !n)
          ok = n.error();
        else
          ctr.sync_count = *n;
        break;
      case mig::record_type::cpu_state:
        cpu = buf;
        break;
      case mig::record_type::devices:
        if (buf.size() != 4 || std::memcmp(buf.data(), "\0\0\0\0", 4) != 0)
          ok = refuse("device state for devices this agent does not have");
        devices = true;
        break;
      case mig::record_type::end:
        more = false;
        break;
      case mig::record_type::abort: {
        auto st = mig::decode_status(buf);
        ok = refuse("the source aborted the migration" + (st ? ": " + st->text : std::string{}));
        break;
      }
      default:
        ok = refuse(std::string{"unexpected "} + mig::to_string(h->type) +
                    " record on the main channel");
    }
    if (!ok) {
      note_failure(ok.error());
      break;
    }
  }
  join_all();
  if (stop) {
    std::lock_guard lk{mtx};
    return refuse(error);
  }
  if (cpu.empty() || !devices)
    return refuse("the stream ended without the guest's CPU and device state");
  if (auto ok = g.load_cpu_state(cpu); !ok)
    return ok;
  if (plan.from.bidirectional()) {
    if (auto ok = main->send(mig::record_type::ready, mig::encode(mig::status_msg{})); !ok)
      return ok;
    FERRY_TRY(h, main->receive(buf));
    if (h.type != mig::record_type::go)
      return refuse("the source cancelled the migration at switchover");
  }
  return {};
}

void migration_destination::impl::run() {
  auto ok = [this] {
    const auto registered = name_migration_thread(hooks.threads, "mig-incoming");
    return execute();
  }();
  total_ms = static_cast<uint64_t>(
    std::chrono::duration_cast<std::chrono::milliseconds>(clock_type::now() - start).count());
  {
    std::lock_guard lk{mtx};
    for (const auto& ch : channels)
      received_closed += ch->bytes_received();
    channels.clear();
  }
  if (!ok) {
    {
      std::lock_guard lk{mtx};
      if (error.empty())
        error = describe(ok.error());
    }
    hooks.step(migration_event::fail);
    return;
  }
  // The owner starts the guest (unless -S) as the state reaches completed.
  hooks.step(migration_event::complete);
}

caf::expected<std::unique_ptr<migration_destination>>
migration_destination::listen(guest& g, incoming_migration plan, migration_hooks hooks) {
  auto p = std::make_unique<impl>(g, std::move(plan), std::move(hooks));
  FERRY_TRY(l, migration_listener::create(p->plan.from));
  p->listener = std::move(l);
  p->plan.from = p->listener->address();
  p->mark_present_data();
  std::unique_ptr<migration_destination> d{new migration_destination(std::move(p))};
  d->impl_->thread = std::thread{[p = d->impl_.get()] { p->run(); }};
  return d;
}

migration_destination::migration_destination(std::unique_ptr<impl> p) : impl_(std::move(p)) {}

migration_destination::~migration_destination() {
  impl_->note_failure(make_ferry_error(errc::bad_run_state, "agent shutting down"));
  impl_->thread.join();
}

const migration_address& migration_destination::address() const {
  return impl_->plan.from;
}

void migration_destination::fill_info(migration_status s, json::object& info) const {
  const impl& p = *impl_;
  if (p.plan.from.bidirectional() && s == migration_status::setup)
    info["socket-address"] = json::array{socket_address_json(p.plan.from)};
  if (s == migration_status::none || s == migration_status::setup)
    return;
  if (s == migration_status::completed || s == migration_status::failed)
    info["total-time"] = p.total_ms.load();
  uint64_t received = p.received_closed;
  {
    std::lock_guard lk{p.mtx};
    for (const auto& c : p.channels)
      received += c->bytes_received();
  }
  // What arrived; the rates are the source's to measure.
  migration_figures f;
  f.transferred = received;
  f.total = p.g.memory().size();
  info["ram"] = migration_stats_json(p.ctr, f);
  if (s == migration_status::failed) {
    std::lock_guard lk{p.mtx};
    info["error-desc"] = p.error;
  }
}

} // namespace ferry
