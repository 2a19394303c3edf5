// The migration controller on its own, without a QMP monitor: it moves a
// -accel none guest between two controllers over a unix socket (every page
// and the CPU state compared), raises MIGRATION events only with `events`
// on, keeps the run-state names QEMU shows around a migration, refuses what
// QEMU refuses and ends the process on a failed incoming migration only
// with exit-on-error.

#include "agent/migration/migration_controller.hpp"
#include "agent/vmm/synthetic_guest.hpp"
#include "tests/support/temp_dir.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <mutex>
#include <thread>

using namespace ferry;
using namespace std::chrono_literals;

namespace {

constexpr uint64_t ram_size = 16u << 20;

struct controlled_guest {
  std::mutex mtx;
  std::vector<std::string> events;
  std::unique_ptr<synthetic_guest> guest;
  std::unique_ptr<migration_controller> ctl;

  explicit controlled_guest(uint64_t dirty_rate) {
    synthetic_guest_config cfg;
    cfg.memory = {memory_backend::kind::ram, ram_size, {}, false};
    cfg.ws_start = 1u << 20;
    cfg.ws_pages = 256;
    cfg.dirty_rate = dirty_rate;
    auto g = synthetic_guest::create(cfg);
    if (!g)
      throw std::runtime_error("guest");
    guest = std::move(*g);
    ctl = std::make_unique<migration_controller>(*guest, [this](std::string line) {
      std::lock_guard lk{mtx};
      events.push_back(std::move(line));
    });
  }

  std::vector<std::string> statuses() {
    std::lock_guard lk{mtx};
    std::vector<std::string> out;
    for (const auto& e : events) {
      const auto at = e.find(R"("status":")");
      if (e.find(R"("event":"MIGRATION")") != std::string::npos && at != std::string::npos)
        out.push_back(e.substr(at + 10, e.find('"', at + 10) - at - 10));
    }
    return out;
  }

  migration_status wait_final(migration_side side) {
    for (int i = 0; i < 3000; ++i) {
      const auto s = ctl->status(side);
      if (s == migration_status::completed || s == migration_status::failed ||
          s == migration_status::cancelled)
        return s;
      std::this_thread::sleep_for(5ms);
    }
    return ctl->status(side);
  }
};

TEST(migration_controller, moves_a_guest_and_alone_writes_both_statuses) {
  ferry::test::temp_dir tmp;
  controlled_guest src{20'000}, dst{0};
  ASSERT_TRUE(src.guest->start());
  for (uint64_t p = 0; p < ram_size / 4096; p += 3)
    std::memset(src.guest->memory().bytes().data() + p * 4096, static_cast<int>(p + 1), 4096);
  src.ctl->set_events(true);
  dst.ctl->set_events(true);
  dst.ctl->expect_incoming(false);
  EXPECT_EQ(dst.ctl->run_state_name(run_state::prelaunch), "inmigrate");
  EXPECT_EQ(dst.ctl->outgoing_refusal(), "Guest is waiting for an incoming migration");

  const auto addr = std::get<migration_address>(parse_migration_uri("unix:" + tmp.file("m.sock")));
  incoming_migration in;
  in.from = addr;
  ASSERT_EQ(dst.ctl->start_incoming(in, false), std::nullopt);
  EXPECT_EQ(dst.ctl->incoming_refusal(), "The incoming migration has already been started");
  EXPECT_FALSE(dst.ctl->settings_locked()) << "an incoming migration in setup takes new settings";
  outgoing_migration out;
  out.target = addr;
  ASSERT_EQ(src.ctl->start_outgoing(out), std::nullopt);
  EXPECT_EQ(src.ctl->start_outgoing(out), "There's a migration process in progress");

  ASSERT_EQ(src.wait_final(migration_side::source), migration_status::completed);
  ASSERT_EQ(dst.wait_final(migration_side::destination), migration_status::completed);
  EXPECT_EQ(src.ctl->info().at("status").as_string(), "completed");
  EXPECT_EQ(dst.ctl->info().at("status").as_string(), "completed");
  EXPECT_EQ(src.ctl->run_state_name(src.guest->state()), "postmigrate");
  EXPECT_EQ(dst.guest->state(), run_state::prelaunch) << "-S: it waits for cont";
  EXPECT_EQ(src.statuses(), (std::vector<std::string>{"setup", "active", "completed"}));
  EXPECT_EQ(dst.statuses(), (std::vector<std::string>{"setup", "active", "completed"}));

  const auto a = src.guest->memory().bytes();
  const auto b = dst.guest->memory().bytes();
  size_t bad = 0;
  for (size_t p = 0; p < a.size() / 4096; ++p)
    bad += std::memcmp(a.data() + p * 4096, b.data() + p * 4096, 4096) != 0 ? 1 : 0;
  EXPECT_EQ(bad, 0U);
  EXPECT_EQ(*src.guest->save_cpu_state(), *dst.guest->save_cpu_state());

  // The source may migrate again; cont ends its postmigrate pause.
  EXPECT_EQ(src.ctl->outgoing_refusal(), std::nullopt);
  EXPECT_FALSE(src.ctl->cont_defers_to_incoming(src.guest->state()));
  EXPECT_EQ(src.ctl->run_state_name(src.guest->state()), std::nullopt);
}

TEST(migration_controller, refuses_as_qemu_and_cancels_a_migration_without_an_engine) {
  controlled_guest g{0};
  EXPECT_EQ(g.ctl->incoming_refusal(), "'-incoming' was not specified on the command line");
  EXPECT_EQ(g.ctl->start_postcopy(), "Postcopy must be started after migration has been started");
  EXPECT_EQ(g.ctl->cancel(), std::nullopt) << "nothing to cancel: nothing said";
  EXPECT_EQ(g.ctl->info().size(), 0U);
  ASSERT_TRUE(g.ctl->step(migration_side::source, migration_event::start));
  EXPECT_TRUE(g.ctl->settings_locked());
  EXPECT_EQ(g.ctl->resume_switchover("pre-switchover"), "Migration not in expected state: setup");
  EXPECT_EQ(g.ctl->pause_postcopy(),
            "migrate-pause is currently only supported during postcopy-active state");
  EXPECT_EQ(g.ctl->cancel(), std::nullopt);
  EXPECT_EQ(g.ctl->status(migration_side::source), migration_status::cancelled);
  EXPECT_FALSE(g.ctl->settings_locked());
  EXPECT_TRUE(g.statuses().empty()) << "events are off";
}

TEST(migration_controller, a_failed_incoming_migration_ends_the_process_only_with_exit_on_error) {
  for (const bool exit_on_error : {true, false}) {
    ferry::test::temp_dir tmp;
    controlled_guest g{0};
    int exit_status = -1;
    g.ctl->set_exit_handler([&](int s) { exit_status = s; });
    g.ctl->expect_incoming(true);
    incoming_migration in;
    in.from = std::get<migration_address>(parse_migration_uri("unix:" + tmp.file("m.sock")));
    ASSERT_EQ(g.ctl->start_incoming(in, exit_on_error), std::nullopt);
    ASSERT_TRUE(g.ctl->step(migration_side::destination, migration_event::fail));
    EXPECT_EQ(g.ctl->run_state_name(run_state::prelaunch), std::nullopt)
      << "no longer inmigrate once failed";
    EXPECT_EQ(exit_status, exit_on_error ? 1 : -1);
  }
}

} // namespace

namespace {

// migrate_cancel on the destination fences it: decided under the
// controller's lock, so once it returns the guest can no longer start from
// this migration (the orchestrator relies on it before it resumes a source).
TEST(migration_controller, migrate_cancel_on_the_destination_fails_it_and_the_guest_never_starts) {
  ferry::test::temp_dir tmp;
  controlled_guest g{0};
  int exit_status = -1;
  g.ctl->set_exit_handler([&](int s) { exit_status = s; });
  g.ctl->set_events(true);
  g.ctl->expect_incoming(true);
  incoming_migration in;
  in.from = std::get<migration_address>(parse_migration_uri("unix:" + tmp.file("m.sock")));
  ASSERT_EQ(g.ctl->start_incoming(in, false), std::nullopt);
  EXPECT_EQ(g.ctl->cancel(), std::nullopt);
  EXPECT_EQ(g.ctl->status(migration_side::destination), migration_status::failed);
  const auto info = g.ctl->info();
  EXPECT_EQ(info.at("status").as_string(), "failed");
  EXPECT_NE(std::string{info.at("error-desc").as_string()}.find("will not start here"),
            std::string::npos)
    << info;
  EXPECT_FALSE(g.ctl->step(migration_side::destination, migration_event::complete))
    << "a go that arrives now cannot complete it";
  EXPECT_EQ(g.guest->state(), run_state::prelaunch);
  EXPECT_EQ(g.statuses(), (std::vector<std::string>{"setup", "failed"}));
  EXPECT_EQ(exit_status, -1) << "exit-on-error was off";
  EXPECT_EQ(g.ctl->cancel(), std::nullopt) << "a second cancel says nothing";
}

} // namespace
