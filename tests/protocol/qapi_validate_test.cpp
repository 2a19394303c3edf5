// Strict QMP argument checking against the real 9.1 migration schema, with
// QEMU's error texts: one table of bad inputs, one of good ones.

#include "protocol/qapi_catalog.hpp"
#include "protocol/qapi_validate.hpp"

#include <boost/json.hpp>
#include <gtest/gtest.h>

using namespace ferry::qapi;
namespace json = boost::json;

namespace {

std::optional<std::string> check(const char* command, const char* args) {
  const auto* cmd = catalog::migration().find(command);
  EXPECT_NE(cmd, nullptr) << command;
  return check_arguments(catalog::migration(), *cmd, json::parse(args).as_object());
}

struct bad_case {
  const char* command;
  const char* args;
  const char* desc;
};

} // namespace

TEST(qapi_validate, bad_arguments_get_qemus_messages) {
  const std::vector<bad_case> cases = {
    {"migrate-set-parameters", R"({"downtime-limit": "300"})",
     "Invalid parameter type for 'downtime-limit', expected: integer"},
    {"migrate-set-parameters", R"({"max-cpu-throttle": 100000})",
     "Parameter 'max-cpu-throttle' expects uint8"},
    {"migrate-set-parameters", R"({"multifd-channels": -1})",
     "Parameter 'multifd-channels' expects uint8"},
    {"migrate-set-parameters", R"({"downtime-limit": -5})",
     "Parameter 'downtime-limit' expects uint64"},
    {"migrate-set-parameters", R"({"max-bandwidth": -1})",
     "Parameter 'max-bandwidth' expects size"},
    {"migrate-set-parameters", R"({"max-bandwidth": 1.5})",
     "Invalid parameter type for 'max-bandwidth', expected: integer"},
    {"migrate-set-parameters", R"({"multifd-compression": "lz4"})",
     "Parameter 'multifd-compression' does not accept value 'lz4'"},
    {"migrate-set-parameters", R"({"multifd-compression": 1})",
     "Invalid parameter type for 'multifd-compression', expected: string"},
    {"migrate-set-parameters", R"({"cpu-throttle-tailslow": "yes"})",
     "Invalid parameter type for 'cpu-throttle-tailslow', expected: boolean"},
    {"migrate-set-parameters", R"({"no-such-parameter": 1})",
     "Parameter 'no-such-parameter' is unexpected"},
    {"migrate-set-parameters", R"({"x-checkpoint-delay": 4294967296})",
     "Parameter 'x-checkpoint-delay' expects uint32"},
    {"migrate-set-parameters",
     R"({"block-bitmap-mapping": [{"node-name": "n", "alias": "a", "bitmaps": [{"name": 1}]}]})",
     "Invalid parameter type for 'block-bitmap-mapping[0].bitmaps[0].name', expected: string"},
    {"migrate-set-capabilities", R"({})", "Parameter 'capabilities' is missing"},
    {"migrate-set-capabilities", R"({"capabilities": {}})",
     "Invalid parameter type for 'capabilities', expected: array"},
    {"migrate-set-capabilities", R"({"capabilities": [{"capability": "xbzrle"}]})",
     "Parameter 'capabilities[0].state' is missing"},
    {"migrate-set-capabilities", R"({"capabilities": [{"capability": "teleport", "state": true}]})",
     "Parameter 'capabilities[0].capability' does not accept value 'teleport'"},
    {"migrate-set-capabilities",
     R"({"capabilities": [{"capability": "events", "state": true, "x": 1}]})",
     "Parameter 'capabilities[0].x' is unexpected"},
    {"migrate", R"({"uri": 5})", "Invalid parameter type for 'uri', expected: string"},
    {"migrate", R"({"channels": [{"channel-type": "main", "addr": {}}]})",
     "Parameter 'channels[0].addr.transport' is missing"},
    {"migrate", R"({"channels": [{"channel-type": "main", "addr": {"transport": "pigeon"}}]})",
     "Parameter 'channels[0].addr.transport' does not accept value 'pigeon'"},
    {"migrate", R"({"channels": [{"channel-type": "main", "addr": {"transport": "exec"}}]})",
     "Parameter 'channels[0].addr.args' is missing"},
    {"migrate",
     R"({"channels": [{"channel-type": "main", "addr": {"transport": "exec", "args": ["a"], "z": 1}}]})",
     "Parameter 'channels[0].addr.z' is unexpected"},
    {"migrate-continue", R"({"state": "flying"})",
     "Parameter 'state' does not accept value 'flying'"},
    {"calc-dirty-rate", R"({})", "Parameter 'calc-time' is missing"},
    {"migrate_cancel", R"({"now": true})", "Parameter 'now' is unexpected"},
    {"migrate-recover", R"({"uri": null})", "Invalid parameter type for 'uri', expected: string"},
  };
  for (const auto& c : cases) {
    const auto got = check(c.command, c.args);
    ASSERT_TRUE(got) << c.command << " " << c.args << " was accepted";
    EXPECT_EQ(*got, c.desc) << c.command << " " << c.args;
  }
}

TEST(qapi_validate, good_arguments_pass) {
  const std::vector<std::pair<const char*, const char*>> cases = {
    {"migrate-set-parameters", R"({})"},
    {"migrate-set-parameters",
     R"({"downtime-limit": 300, "max-bandwidth": 134217728, "multifd-channels": 255,
         "multifd-compression": "zstd", "zero-page-detection": "legacy", "mode": "normal",
         "x-checkpoint-delay": 4294967295, "cpu-throttle-tailslow": false,
         "tls-creds": "tls0", "tls-hostname": null})"},
    {"migrate-set-capabilities",
     R"({"capabilities": [{"capability": "x-colo", "state": false},
                          {"capability": "mapped-ram", "state": true}]})"},
    {"migrate", R"({"uri": "tcp:127.0.0.1:4444", "detach": true})"},
    {"migrate",
     R"({"channels": [{"channel-type": "main",
                       "addr": {"transport": "exec", "args": ["cat"]}}]})"},
    {"migrate-incoming", R"({"uri": "defer", "exit-on-error": false})"},
    {"migrate_cancel", R"({})"},
    {"migrate-continue", R"({"state": "pre-switchover"})"},
    {"calc-dirty-rate", R"({"calc-time": 1, "calc-time-unit": "millisecond"})"},
  };
  for (const auto& [cmd, args] : cases) {
    const auto got = check(cmd, args);
    EXPECT_FALSE(got) << cmd << " " << args << ": " << got.value_or("");
  }
}

// Input is only followed as deep as the schema type goes: a hostile, deeply
// nested value meets a type error at once.
TEST(qapi_validate, hostile_nesting_is_not_followed) {
  json::value deep = json::array{};
  for (int i = 0; i < 1000; ++i)
    deep = json::array{deep};
  json::object arg{{"capability", "events"}, {"state", deep}};
  auto got =
    check_value(catalog::migration(), json::value(json::string("MigrationCapabilityStatus")), arg,
                "capabilities[0]");
  ASSERT_TRUE(got);
  EXPECT_EQ(*got, "Invalid parameter type for 'capabilities[0].state', expected: boolean");
}
