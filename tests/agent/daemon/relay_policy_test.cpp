// The host actor's QMP allow-list: the orchestrator's commands pass, a
// migration only to a tcp: address, and everything that names a host path or
// runs a program is refused with the reason.

#include "agent/daemon/relay_policy.hpp"

#include <boost/json.hpp>
#include <gtest/gtest.h>

namespace ferry {
namespace {

namespace json = boost::json;

TEST(relay_policy, the_orchestrators_commands_pass) {
  for (const char* c : {"query-status", "query-migrate", "query-migrate-parameters",
                        "migrate-set-capabilities", "migrate-set-parameters", "migrate_cancel",
                        "cont", "calc-dirty-rate", "query-dirty-rate", "set-vcpu-dirty-limit",
                        "cancel-vcpu-dirty-limit", "migrate-start-postcopy", "migrate-pause"})
    EXPECT_FALSE(relay_refusal(c, "")) << c;
  EXPECT_FALSE(relay_refusal("migrate", R"({"uri":"tcp:10.0.0.2:4444"})"));
  EXPECT_FALSE(relay_refusal("migrate-incoming", R"({"uri":"tcp:0.0.0.0:0"})"));
  EXPECT_FALSE(relay_refusal("migrate-recover", R"({"uri":"tcp:10.0.0.3:4444"})"));
  EXPECT_FALSE(relay_refusal("migrate",
                             R"({"channels":[{"channel-type":"main","addr":{"transport":"socket",)"
                             R"("type":"inet","host":"10.0.0.2","port":"4444"}}]})"));
}

TEST(relay_policy, paths_programs_and_other_commands_are_refused_with_the_reason) {
  const auto exec = relay_refusal("migrate", R"({"uri":"exec:sh -c 'id > /tmp/x'"})");
  ASSERT_TRUE(exec);
  EXPECT_NE(exec->find("tcp: addresses only"), std::string::npos) << *exec;
  EXPECT_TRUE(relay_refusal("migrate", R"({"uri":"file:/etc/passwd"})"));
  EXPECT_TRUE(relay_refusal("migrate-incoming", R"({"uri":"unix:/run/x.sock"})"));
  EXPECT_TRUE(relay_refusal("migrate-recover", R"({"uri":"unix:/run/x.sock"})"));
  EXPECT_TRUE(relay_refusal("migrate",
                            R"({"channels":[{"channel-type":"main","addr":{"transport":"exec",)"
                            R"("args":["/bin/sh","-c","id"]}}]})"));
  EXPECT_TRUE(relay_refusal("migrate", "")) << "no address at all";
  EXPECT_TRUE(relay_refusal("migrate", "[1]")) << "arguments that are not an object";
  for (const char* c : {"pmemsave", "memsave", "dump-guest-memory", "human-monitor-command",
                        "object-add", "quit", "system_reset", "blockdev-add", "getfd", "add-fd"}) {
    const auto why = relay_refusal(c, "{}");
    ASSERT_TRUE(why) << c;
    EXPECT_NE(why->find("not relayed"), std::string::npos) << *why;
  }
}

TEST(relay_policy, a_refusal_is_a_qmp_error_reply) {
  const auto v = json::parse(relay_refusal_reply("no"));
  EXPECT_EQ(v.at("error").at("class").as_string(), "GenericError");
  EXPECT_EQ(v.at("error").at("desc").as_string(), "no");
}

} // namespace
} // namespace ferry
