// The guest QMP relay's subscribers: one that ends (a finished migration
// job) is forgotten — no "unhandled down message" on the agent's stdout, no
// events sent to it — while the others still hear from the relay.

#include "actors/host_interface.hpp"
#include "agent/daemon/guest_qmp_relay.hpp"

#include <caf/all.hpp>
#include <gtest/gtest.h>

#include <chrono>
#include <string>

namespace ferry {
namespace {

TEST(guest_qmp_relay, a_subscriber_that_ended_is_dropped_and_the_others_still_hear) {
  testing::internal::CaptureStdout();
  std::string end_notice = "(none)";
  {
    caf::actor_system_config cfg;
    cfg.set("scheduler.max-threads", 2);
    caf::actor_system sys{cfg};
    // Never connected: subscribing and the relay's end notice need no guest.
    auto relay =
      spawn_guest_qmp_relay(sys, "host-a", "g1", "/nonexistent.sock", [] { return true; });
    caf::scoped_actor self{sys};
    const auto subscribe = [&](const caf::actor& who) {
      self->request(relay, std::chrono::seconds(5), subscribe_atom::value, who)
        .receive([](bool ok) { EXPECT_TRUE(ok); },
                 [](const caf::error& e) { FAIL() << caf::to_string(e); });
    };
    caf::actor gone;
    {
      caf::scoped_actor subscriber{sys};
      gone = caf::actor_cast<caf::actor>(subscriber);
      subscribe(gone);
    } // the subscriber ends here
    subscribe(caf::actor_cast<caf::actor>(self));
    caf::scoped_actor waiter{sys};
    waiter->wait_for(gone);
    // A request answered after the down message: the relay has handled it.
    subscribe(caf::actor_cast<caf::actor>(self));
    self->send_exit(relay, caf::exit_reason::user_shutdown);
    self->receive_while([&] { return end_notice == "(none)"; })(
      [&](qmp_event_atom, const std::string&, const std::string&, const std::string& event) {
        end_notice = event;
      },
      caf::after(std::chrono::seconds(5)) >> [&] { end_notice = "(timed out)"; });
  }
  const std::string out = testing::internal::GetCapturedStdout();
  EXPECT_EQ(end_notice, "") << "a living subscriber hears that the relay ended";
  EXPECT_EQ(out.find("unhandled down message"), std::string::npos) << out;
}

} // namespace
} // namespace ferry
