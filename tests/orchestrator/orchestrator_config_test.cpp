#include "orchestrator/orchestrator_config.hpp"

#include "agent/agent_error.hpp"

#include <gtest/gtest.h>

namespace ferry {
namespace {

const std::string base = R"(
[http]
listen = "127.0.0.1:47300"
[journal]
path = "/var/lib/ferry/journal.db"
[tls]
ca = "ca.pem"
cert = "o.pem"
key = "o-key.pem"
[[agents]]
name = "host-a"
address = "10.0.0.1:47200"
[[agents]]
name = "host-b"
address = "[fd00::2]:47200"
)";

TEST(orchestrator_config, reads_agents_and_defaults_the_policy_as_the_issue_says) {
  auto c = parse_orchestrator_config(base, "o.toml");
  ASSERT_TRUE(c) << describe(c.error());
  EXPECT_EQ(c->http.port, 47300);
  ASSERT_EQ(c->agents.size(), 2U);
  EXPECT_EQ(c->agents[1].control.host, "fd00::2");
  EXPECT_EQ(c->policy.max_migrations, 5U);
  EXPECT_EQ(c->policy.max_outbound_per_host, 2U);
  EXPECT_EQ(c->policy.max_inbound_per_host, 2U);
  EXPECT_EQ(c->policy.downtime_limit_ms, 300U);
}

TEST(orchestrator_config, policy_overrides_apply) {
  auto c = parse_orchestrator_config(base + "[policy]\nmax_migrations = 9\nmultifd_channels = 0\n",
                                     "o.toml");
  ASSERT_TRUE(c) << describe(c.error());
  EXPECT_EQ(c->policy.max_migrations, 9U);
  EXPECT_EQ(c->policy.multifd_channels, 0U);
}

TEST(orchestrator_config, mistakes_are_named) {
  auto expect_error = [](const std::string& text, const std::string& needle) {
    auto c = parse_orchestrator_config(text, "o.toml");
    ASSERT_FALSE(c) << text;
    EXPECT_NE(describe(c.error()).find(needle), std::string::npos) << describe(c.error());
  };
  expect_error("[http\n", "o.toml:");
  expect_error(base + "[policy]\nmax_migrations = 0\n", "at least 1");
  expect_error(base + "[policy]\nmax_bandwidth = \"fast\"\n", "policy.max_bandwidth");
  expect_error(base + "[[agents]]\nname = \"host-a\"\naddress = \"x:1\"\n", "listed twice");
  expect_error(base + "[[agents]]\nname = \"host-c\"\naddress = \"nocolon\"\n", "HOST:PORT");
  expect_error("[http]\nlisten = \"127.0.0.1:1\"\n", "journal.path");
}

} // namespace
} // namespace ferry
