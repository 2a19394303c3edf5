// Both engines over the in-memory loopback transport, with a fault aimed at
// each phase: reads cut to a few bytes (the migration still completes, page
// for page), a reset and a stall (cut by migrate_cancel, as an operator
// would). After every fault the source guest runs on with its memory intact
// and the destination has failed cleanly; it never runs.

#include "agent/migration/migration_destination.hpp"
#include "agent/migration/migration_source.hpp"
#include "agent/transport/loopback_stream.hpp"
#include "agent/vmm/synthetic_guest.hpp"
#include "common/error.hpp"

#include <boost/json.hpp>
#include <gtest/gtest.h>

#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>

using namespace ferry;
using namespace std::chrono_literals;
namespace json = boost::json;

namespace {

constexpr uint64_t ram_size = 16u << 20;
constexpr uint64_t ws_start = 1u << 20;
constexpr uint64_t ws_pages = 256;

// Destination streams the source's opener made, waiting to be accepted.
struct loopback_hub {
  std::mutex mtx;
  std::condition_variable cv;
  std::deque<std::unique_ptr<byte_stream>> pending;
  bool interrupted = false;
};

class hub_acceptor final : public channel_acceptor {
public:
  explicit hub_acceptor(std::shared_ptr<loopback_hub> hub) : hub_(std::move(hub)) {}
  caf::expected<std::unique_ptr<migration_channel>> accept(int timeout_ms) override {
    std::unique_lock lk{hub_->mtx};
    const auto ready = [this] { return hub_->interrupted || !hub_->pending.empty(); };
    if (timeout_ms < 0)
      hub_->cv.wait(lk, ready);
    else
      hub_->cv.wait_for(lk, std::chrono::milliseconds(timeout_ms), ready);
    if (hub_->pending.empty())
      return make_ferry_error(errc::system_error, "no loopback channel");
    auto s = std::move(hub_->pending.front());
    hub_->pending.pop_front();
    return std::make_unique<migration_channel>(std::move(s));
  }
  void interrupt() override {
    std::lock_guard lk{hub_->mtx};
    hub_->interrupted = true;
    hub_->cv.notify_all();
  }

private:
  std::shared_ptr<loopback_hub> hub_;
};

// One side's owner: its MigrationStatus, stepped as the QMP monitor steps it.
struct owner {
  explicit owner(migration_side s) : side(s) {}
  migration_side side;
  std::mutex mtx;
  migration_status status = migration_status::none;
  guest::pause_guard handed_over;

  bool step_to(migration_event ev) {
    std::lock_guard lk{mtx};
    auto next = step(side, status, ev);
    if (next)
      status = *next;
    return static_cast<bool>(next);
  }
  migration_status now() {
    std::lock_guard lk{mtx};
    return status;
  }
  migration_hooks hooks() {
    migration_hooks h;
    h.step = [this](migration_event ev) { return step_to(ev); };
    h.emit = [](const std::string&) {};
    h.complete = [this](guest::pause_guard& g) {
      std::lock_guard lk{mtx};
      auto next = step(side, status, migration_event::complete);
      if (!next)
        return false;
      status = *next;
      handed_over = std::move(g);
      return true;
    };
    return h;
  }
};

std::unique_ptr<synthetic_guest> make_guest(uint64_t dirty_rate, bool fill) {
  synthetic_guest_config cfg;
  cfg.memory = {memory_backend::kind::ram, ram_size, {}, false};
  cfg.ws_start = ws_start;
  cfg.ws_pages = ws_pages;
  cfg.dirty_rate = dirty_rate;
  auto g = synthetic_guest::create(cfg);
  EXPECT_TRUE(g) << describe(g.error());
  if (fill) {
    auto bytes = (*g)->memory().bytes();
    for (uint64_t p = 0; p < bytes.size() / 4096; ++p)
      if (p % 4 != 3)
        std::memset(bytes.data() + p * 4096, static_cast<int>(p * 7 + 1), 4096);
  }
  return std::move(*g);
}

// Pages outside the working set hold what make_guest wrote.
size_t pages_changed_outside_working_set(const guest_memory& m) {
  size_t bad = 0;
  const uint8_t* b = m.data();
  for (uint64_t p = 0; p < ram_size / 4096; ++p) {
    if (p >= ws_start / 4096 && p < ws_start / 4096 + ws_pages)
      continue;
    const uint8_t want = p % 4 == 3 ? 0 : static_cast<uint8_t>(p * 7 + 1);
    for (size_t i = 0; i < 4096; i += 512)
      if (b[p * 4096 + i] != want) {
        ++bad;
        break;
      }
  }
  return bad;
}

enum class aim { source, destination };

struct fault_case {
  aim at;
  uint8_t phase; // source_phase or destination_phase
  loopback_faults::kind fault;
  uint32_t channels; // 0 = no multifd
};

std::string name_of(const fault_case& c) {
  std::string n =
    c.at == aim::source
      ? "source_" + std::string{to_string(static_cast<source_phase>(c.phase))}
      : "destination_" + std::string{to_string(static_cast<destination_phase>(c.phase))};
  n += c.fault == loopback_faults::kind::reset ? "_reset" : "_stall";
  n += c.channels == 0 ? "_one_channel" : "_multifd";
  for (auto& ch : n)
    if (ch == '-')
      ch = '_';
  return n;
}

struct engines {
  std::unique_ptr<synthetic_guest> src_guest = make_guest(20'000, true);
  std::unique_ptr<synthetic_guest> dst_guest = make_guest(0, false);
  owner src{migration_side::source};
  owner dst{migration_side::destination};
  std::shared_ptr<loopback_hub> hub = std::make_shared<loopback_hub>();
  std::atomic<migration_source*> source{nullptr};
  std::atomic<migration_destination*> destination{nullptr};
  std::unique_ptr<migration_destination> dst_engine;
  std::unique_ptr<migration_source> src_engine;
  // Asked before each channel the source opens (the main one first); an
  // error fails that open.
  std::function<caf::expected<void>()> before_open;

  // Starts both engines with `faults` on every channel.
  void start(const loopback_faults& faults, uint32_t channels,
             const std::function<void(incoming_migration&)>& tweak = {}) {
    ASSERT_TRUE(src_guest->start());
    migration_address tcp; // replies flow back, as on a socket
    incoming_migration in;
    in.from = tcp;
    in.multifd = channels > 0;
    in.channels = channels;
    if (tweak)
      tweak(in);
    ASSERT_TRUE(dst.step_to(migration_event::start));
    dst_engine = migration_destination::start(*dst_guest, in, dst.hooks(),
                                              std::make_unique<hub_acceptor>(hub));
    destination = dst_engine.get();
    outgoing_migration out;
    out.target = tcp;
    out.multifd = channels > 0;
    out.channels = channels;
    out.open = [this, faults]() -> caf::expected<std::unique_ptr<migration_channel>> {
      if (before_open)
        if (auto ok = before_open(); !ok)
          return ok.error();
      auto [a, b] = make_loopback_pair(faults);
      {
        std::lock_guard lk{hub->mtx};
        hub->pending.push_back(std::move(b));
        hub->cv.notify_all();
      }
      return std::make_unique<migration_channel>(std::move(a));
    };
    ASSERT_TRUE(src.step_to(migration_event::start));
    src_engine = std::make_unique<migration_source>(*src_guest, out, src.hooks());
    source = src_engine.get();
  }

  bool wait_for(const std::function<bool()>& done, std::chrono::seconds limit) {
    const auto until = std::chrono::steady_clock::now() + limit;
    while (!done() && std::chrono::steady_clock::now() < until)
      std::this_thread::sleep_for(2ms);
    return done();
  }

  static bool ended(migration_status s) {
    return s == migration_status::completed || s == migration_status::failed ||
           s == migration_status::cancelled;
  }
};

class engine_faults : public ::testing::TestWithParam<fault_case> {};

} // namespace

TEST_P(engine_faults, source_runs_on_intact_and_destination_fails_cleanly) {
  const auto c = GetParam();
  engines e;
  loopback_faults f;
  f.fault = c.fault;
  // The fault starts at the first read or write once the aimed side has
  // reached the phase (a phase without I/O of its own is hit at the next).
  f.trigger = [&e, c] {
    if (c.at == aim::source) {
      auto* s = e.source.load();
      return s != nullptr && static_cast<uint8_t>(s->phase()) >= c.phase;
    }
    auto* d = e.destination.load();
    return d != nullptr && static_cast<uint8_t>(d->phase()) >= c.phase;
  };
  e.start(f, c.channels);
  if (c.fault == loopback_faults::kind::stall) {
    // Nothing moves; the operator gives up after a while.
    std::this_thread::sleep_for(300ms);
    if (!engines::ended(e.src.now())) {
      ASSERT_TRUE(e.src.step_to(migration_event::cancel)) << to_string(e.src.now());
      e.src_engine->cancel();
    }
  }
  ASSERT_TRUE(e.wait_for([&] { return engines::ended(e.src.now()); }, 20s))
    << to_string(e.src.now()) << " in " << to_string(e.src_engine->phase());
  EXPECT_NE(e.src.now(), migration_status::completed) << "a faulty link cannot complete";
  ASSERT_TRUE(e.wait_for([&] { return engines::ended(e.dst.now()); }, 20s))
    << to_string(e.dst.now()) << " in " << to_string(e.dst_engine->phase());
  EXPECT_EQ(e.dst.now(), migration_status::failed);
  EXPECT_EQ(e.dst_engine->phase(), destination_phase::failed);
  EXPECT_EQ(e.dst_guest->state(), run_state::prelaunch) << "the destination never runs";

  // The source guest runs on, dirtying, and nothing else of it changed.
  EXPECT_EQ(e.src_guest->state(), run_state::running);
  const uint64_t before = e.src_guest->passes();
  EXPECT_TRUE(e.wait_for([&] { return e.src_guest->passes() > before + 1; }, 10s));
  auto pause = e.src_guest->pause();
  EXPECT_EQ(pages_changed_outside_working_set(e.src_guest->memory()), 0U);
}

namespace {

std::vector<fault_case> every_phase() {
  std::vector<fault_case> out;
  for (auto fault : {loopback_faults::kind::reset, loopback_faults::kind::stall})
    for (uint32_t channels : {0u, 2u}) {
      for (auto p : {source_phase::connect, source_phase::setup, source_phase::iterate,
                     source_phase::switchover, source_phase::device_state, source_phase::handover})
        out.push_back({aim::source, static_cast<uint8_t>(p), fault, channels});
      for (auto p :
           {destination_phase::listen, destination_phase::handshake, destination_phase::channels,
            destination_phase::receive, destination_phase::load_state, destination_phase::handover})
        out.push_back({aim::destination, static_cast<uint8_t>(p), fault, channels});
    }
  return out;
}

} // namespace

INSTANTIATE_TEST_SUITE_P(every_phase, engine_faults, ::testing::ValuesIn(every_phase()),
                         [](const auto& p) { return name_of(p.param); });

// Reads cut to 7 bytes at every phase: a correct reader copes, and the guest
// arrives page for page.
TEST(engine_short_reads, a_migration_over_short_reads_completes_page_for_page) {
  for (uint32_t channels : {0u, 2u}) {
    engines e;
    loopback_faults f;
    f.max_read = 7;
    e.start(f, channels);
    ASSERT_TRUE(e.wait_for([&] { return engines::ended(e.src.now()); }, 60s));
    ASSERT_EQ(e.src.now(), migration_status::completed) << channels;
    ASSERT_TRUE(e.wait_for([&] { return engines::ended(e.dst.now()); }, 20s));
    ASSERT_EQ(e.dst.now(), migration_status::completed);
    EXPECT_EQ(e.src_engine->phase(), source_phase::done);
    EXPECT_EQ(e.dst_engine->phase(), destination_phase::done);
    // The source is stopped (handed over); both memories are the same.
    auto pause = e.dst_guest->pause();
    EXPECT_EQ(std::memcmp(e.src_guest->memory().data(), e.dst_guest->memory().data(), ram_size), 0);
    auto a = e.src_guest->save_cpu_state();
    auto b = e.dst_guest->save_cpu_state();
    ASSERT_TRUE(a && b);
    EXPECT_EQ(*a, *b);
  }
}

// The source completed (its guest is handed over, paused) but its go never
// arrives: the destination holds the whole guest and gives up after the
// link timeout, paused. It never starts on its own: the source may still
// be resumed by whoever decides, and two running copies are worse than a
// wait.
TEST(engine_handover, a_destination_without_go_gives_up_after_the_link_timeout_and_stays_paused) {
  ::setenv("FERRY_MIGRATION_LINK_TIMEOUT_MS", "400", 1);
  engines e;
  loopback_faults f;
  f.fault = loopback_faults::kind::stall;
  f.trigger = [&e] { return e.src.now() == migration_status::completed; };
  e.start(f, 0);
  ASSERT_TRUE(e.wait_for([&] { return engines::ended(e.src.now()); }, 20s));
  ASSERT_EQ(e.src.now(), migration_status::completed);
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(e.wait_for([&] { return engines::ended(e.dst.now()); }, 20s));
  const auto waited = std::chrono::steady_clock::now() - t0;
  ::unsetenv("FERRY_MIGRATION_LINK_TIMEOUT_MS");
  EXPECT_EQ(e.dst.now(), migration_status::failed);
  EXPECT_GE(waited, 300ms) << "it waited for the go";
  EXPECT_TRUE(e.dst_engine->holds_whole_guest());
  EXPECT_EQ(e.dst_guest->state(), run_state::prelaunch) << "never started without go";
  json::object info;
  e.dst_engine->fill_info(migration_status::failed, info);
  EXPECT_NE(std::string{info.at("error-desc").as_string()}.find("no go from the source"),
            std::string::npos)
    << info;
  e.src_engine.reset(); // the stalled stream ends with the engines
  e.dst_engine.reset();
}

// The switchover digest: one page corrupted as it is applied (a fault the
// stream's CRCs cannot see: the bytes arrived intact) makes the destination
// refuse the guest before it could run; the source hears why and runs on.
TEST(engine_digest, a_page_corrupted_on_apply_is_caught_before_the_destination_runs) {
  for (uint32_t channels : {0u, 2u}) {
    engines e;
    constexpr uint64_t victim = 2; // outside the working set, with data
    e.start({}, channels, [](incoming_migration& in) {
      in.after_apply = [](uint64_t pfn, uint8_t* page) {
        if (pfn == victim)
          page[100] ^= 0x40;
      };
    });
    ASSERT_TRUE(e.wait_for([&] { return engines::ended(e.src.now()); }, 60s));
    EXPECT_EQ(e.src.now(), migration_status::failed) << channels;
    json::object info;
    e.src_engine->fill_info(migration_status::failed, info);
    EXPECT_NE(std::string{info.at("error-desc").as_string()}.find("switchover digest mismatch"),
              std::string::npos)
      << info;
    ASSERT_TRUE(e.wait_for([&] { return engines::ended(e.dst.now()); }, 20s));
    EXPECT_EQ(e.dst.now(), migration_status::failed);
    EXPECT_EQ(e.dst_guest->state(), run_state::prelaunch) << "never ran";
    EXPECT_EQ(e.src_guest->state(), run_state::running) << "the source runs on";
    auto pause = e.src_guest->pause();
    EXPECT_EQ(pages_changed_outside_working_set(e.src_guest->memory()), 0U);
  }
}

// And without a fault every migration carries a matching digest: the
// destination completes only after comparing (the short-read test above
// and every other migration test pass through the same check).
TEST(engine_digest, an_intact_migration_completes_with_a_matching_digest) {
  engines e;
  bool saw_pages = false;
  e.start({}, 2, [&saw_pages](incoming_migration& in) {
    in.after_apply = [&saw_pages](uint64_t, uint8_t*) { saw_pages = true; };
  });
  ASSERT_TRUE(e.wait_for([&] { return engines::ended(e.dst.now()); }, 60s));
  EXPECT_EQ(e.dst.now(), migration_status::completed);
  EXPECT_TRUE(saw_pages);
}

// The multifd channels are opened at once, not one after another (a TLS
// handshake each would otherwise hold the first page back by all of them):
// every open waits until all of them have begun, which one after another
// never happens.
TEST(engine_channels, multifd_channels_are_opened_at_once) {
  constexpr int multifd_channels = 4;
  engines e;
  std::mutex m;
  std::condition_variable cv;
  int begun = 0;
  bool all_at_once = true;
  e.before_open = [&]() -> caf::expected<void> {
    std::unique_lock lk{m};
    if (++begun == 1)
      return {}; // the main channel, before any multifd one
    cv.notify_all();
    if (!cv.wait_for(lk, 5s, [&] { return begun == 1 + multifd_channels; }))
      all_at_once = false;
    return {};
  };
  e.start({}, multifd_channels);
  ASSERT_TRUE(e.wait_for([&] { return engines::ended(e.dst.now()); }, 60s));
  EXPECT_EQ(e.dst.now(), migration_status::completed);
  std::lock_guard lk{m};
  EXPECT_TRUE(all_at_once) << begun << " opens";
}

// One channel that cannot be opened fails the migration with its reason;
// the source runs on with its memory intact.
TEST(engine_channels, a_channel_that_cannot_open_fails_the_migration_with_its_reason) {
  engines e;
  std::atomic<int> opens{0};
  e.before_open = [&]() -> caf::expected<void> {
    if (++opens == 3)
      return make_ferry_error(errc::system_error, "channel three is refused here");
    return {};
  };
  e.start({}, 4);
  ASSERT_TRUE(e.wait_for([&] { return engines::ended(e.src.now()); }, 30s));
  EXPECT_EQ(e.src.now(), migration_status::failed);
  json::object info;
  e.src_engine->fill_info(migration_status::failed, info);
  EXPECT_NE(std::string{info.at("error-desc").as_string()}.find("channel three is refused here"),
            std::string::npos)
    << info;
  EXPECT_EQ(e.src_guest->state(), run_state::running) << "the source runs on";
  auto pause = e.src_guest->pause();
  EXPECT_EQ(pages_changed_outside_working_set(e.src_guest->memory()), 0U);
  e.src_engine.reset();
  e.dst_engine.reset();
}
