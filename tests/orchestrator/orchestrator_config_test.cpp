#include "orchestrator/orchestrator_config.hpp"

#include "agent/daemon/daemon_config.hpp"
#include "common/error.hpp"

#include <gtest/gtest.h>

namespace ferry {
namespace {

const std::string base = R"(
[http]
listen = "127.0.0.1:47300"
tokens = "/etc/ferry/api-tokens"
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
  EXPECT_TRUE(c->policy.dirty_limit_step);
  EXPECT_EQ(c->policy.dirty_limit_mib_s, 1U);
  EXPECT_TRUE(c->policy.prepare_ahead);
  EXPECT_FALSE(c->policy.postcopy_step) << "postcopy can lose a guest: only where allowed";
  EXPECT_TRUE(c->policy.postcopy_preempt);
  EXPECT_EQ(c->policy.max_postcopy_bandwidth, 0U);
  EXPECT_EQ(c->policy.postcopy_recover_backoff_max_s, 30U);
}

TEST(orchestrator_config, policy_overrides_apply) {
  auto c = parse_orchestrator_config(base + "[policy]\nmax_migrations = 9\nmultifd_channels = 0\n"
                                            "dirty_limit_step = false\ndirty_limit_mib_s = 8\n"
                                            "prepare_ahead = false\npostcopy_step = true\n"
                                            "max_postcopy_bandwidth = 1048576\n"
                                            "postcopy_recover_backoff_max_s = 5\n",
                                     "o.toml");
  ASSERT_TRUE(c) << describe(c.error());
  EXPECT_EQ(c->policy.max_migrations, 9U);
  EXPECT_EQ(c->policy.multifd_channels, 0U);
  EXPECT_FALSE(c->policy.dirty_limit_step);
  EXPECT_EQ(c->policy.dirty_limit_mib_s, 8U);
  EXPECT_FALSE(c->policy.prepare_ahead);
  EXPECT_TRUE(c->policy.postcopy_step);
  EXPECT_EQ(c->policy.max_postcopy_bandwidth, 1048576U);
  EXPECT_EQ(c->policy.postcopy_recover_backoff_max_s, 5U);
}

TEST(orchestrator_config, mistakes_are_named) {
  auto expect_error = [](const std::string& text, const std::string& needle) {
    auto c = parse_orchestrator_config(text, "o.toml");
    ASSERT_FALSE(c) << text;
    EXPECT_NE(describe(c.error()).find(needle), std::string::npos) << describe(c.error());
  };
  expect_error("[http\n", "o.toml:");
  expect_error(base + "[policy]\nmax_migrations = 0\n", "at least 1");
  expect_error(base + "[policy]\ndirty_limit_mib_s = 0\n", "dirty_limit_mib_s must be at least 1");
  expect_error(base + "[policy]\ndirty_limit_step = 1\n", "policy.dirty_limit_step");
  expect_error(base + "[policy]\npostcopy_recover_backoff_max_s = 0\n", "at least 1");
  expect_error(base + "[policy]\npostcopy_step = \"yes\"\n", "policy.postcopy_step");
  expect_error(base + "[policy]\nmax_bandwidth = \"fast\"\n", "policy.max_bandwidth");
  expect_error(base + "[[agents]]\nname = \"host-a\"\naddress = \"x:1\"\n", "listed twice");
  expect_error(base + "[[agents]]\nname = \"host-c\"\naddress = \"nocolon\"\n", "HOST:PORT");
  expect_error("[http]\nlisten = \"127.0.0.1:1\"\n", "'http.tokens'");
  expect_error("[http]\nlisten = \"127.0.0.1:1\"\ntokens = \"t\"\n", "journal.path");
}

// HTTPS for the API: cert and key together, client certificates only over
// HTTPS, plain HTTP only on loopback, and someone must be able to log in.
TEST(orchestrator_config, the_api_is_served_in_clear_only_on_loopback) {
  auto with_http = [](const std::string& http) {
    std::string text = base;
    const auto at = text.find("[journal]");
    return text.replace(text.find("[http]"), at - text.find("[http]"), "[http]\n" + http);
  };
  auto expect_error = [&](const std::string& http, const std::string& needle) {
    auto c = parse_orchestrator_config(with_http(http), "o.toml");
    ASSERT_FALSE(c) << http;
    EXPECT_NE(describe(c.error()).find(needle), std::string::npos) << describe(c.error());
  };
  expect_error("listen = \"0.0.0.0:47300\"\ntokens = \"t\"\n", "serve HTTPS");
  expect_error("listen = \"10.0.0.5:47300\"\ntokens = \"t\"\n", "which other machines can reach");
  expect_error("listen = \"127.0.0.1:1\"\ntokens = \"t\"\ncert = \"c.pem\"\n",
               "both 'http.cert' and 'http.key'");
  expect_error("listen = \"127.0.0.1:1\"\nclient_ca = \"ca.pem\"\n", "needs HTTPS");
  expect_error("listen = \"10.0.0.5:1\"\ncert = \"c.pem\"\nkey = \"k.pem\"\n",
               "name who may use the API");
  for (const char* loopback : {"127.0.0.1:1", "[::1]:1", "localhost:1"}) {
    auto c = parse_orchestrator_config(
      with_http("listen = \"" + std::string{loopback} + "\"\ntokens = \"t\"\n"), "o.toml");
    ASSERT_TRUE(c) << loopback << ": " << describe(c.error());
    EXPECT_FALSE(c->https);
  }
  auto c = parse_orchestrator_config(
    with_http("listen = \"0.0.0.0:47300\"\ncert = \"c.pem\"\nkey = \"k.pem\"\n"
              "client_ca = \"clients-ca.pem\"\n"),
    "o.toml");
  ASSERT_TRUE(c) << describe(c.error());
  ASSERT_TRUE(c->https);
  EXPECT_EQ(c->https->cert, "c.pem");
  EXPECT_EQ(c->https->key, "k.pem");
  EXPECT_EQ(c->https->client_ca, "clients-ca.pem");
  EXPECT_EQ(c->http_tokens, "") << "certificates alone are enough";
}

} // namespace
} // namespace ferry

namespace ferry {
namespace {

// The examples in deploy/ are what operators copy: they must load, and say
// what the defaults say.
TEST(example_configs, load_with_the_documented_settings) {
  auto o = load_orchestrator_config(FERRY_SOURCE_DIR "/deploy/examples/orchestrator.toml");
  ASSERT_TRUE(o) << describe(o.error());
  const migration_policy defaults;
  EXPECT_EQ(o->policy.escalate_after_passes, defaults.escalate_after_passes);
  EXPECT_EQ(o->policy.downtime_steps, defaults.downtime_steps);
  EXPECT_EQ(o->policy.auto_converge_step, defaults.auto_converge_step);
  EXPECT_EQ(o->policy.dirty_limit_step, defaults.dirty_limit_step);
  EXPECT_EQ(o->policy.dirty_limit_mib_s, defaults.dirty_limit_mib_s);
  EXPECT_EQ(o->policy.postcopy_step, defaults.postcopy_step);
  EXPECT_EQ(o->policy.postcopy_preempt, defaults.postcopy_preempt);
  EXPECT_EQ(o->policy.max_postcopy_bandwidth, defaults.max_postcopy_bandwidth);
  EXPECT_EQ(o->policy.postcopy_recover_backoff_max_s, defaults.postcopy_recover_backoff_max_s);
  EXPECT_EQ(o->policy.max_migrations, defaults.max_migrations);
  auto a = load_daemon_config(FERRY_SOURCE_DIR "/deploy/examples/agent.toml");
  ASSERT_TRUE(a) << describe(a.error());
}

} // namespace
} // namespace ferry
