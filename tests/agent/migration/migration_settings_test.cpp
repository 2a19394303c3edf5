// Migration capabilities and parameters: QEMU 9.1's names, order and
// defaults, its cross-checks, and the commands (new and legacy) over them.

#include "agent/migration/migration_settings.hpp"
#include "agent/qmp/qmp_monitor.hpp"
#include "agent/vmm/synthetic_guest.hpp"

#include <boost/json.hpp>
#include <gtest/gtest.h>

using namespace ferry;
namespace json = boost::json;

namespace {

// QEMU 9.1's answer to query-migrate-parameters on a fresh VM, written out by
// hand as the oracle (names, order and defaults).
constexpr const char* qemu91_parameters =
  R"({"announce-initial":50,"announce-max":550,"announce-rounds":5,"announce-step":100,)"
  R"("throttle-trigger-threshold":50,"cpu-throttle-initial":20,"cpu-throttle-increment":10,)"
  R"("cpu-throttle-tailslow":false,"tls-creds":"","tls-hostname":"","tls-authz":"",)"
  R"("max-bandwidth":134217728,"avail-switchover-bandwidth":0,"downtime-limit":300,)"
  R"("x-checkpoint-delay":20000,"multifd-channels":2,"xbzrle-cache-size":67108864,)"
  R"("max-postcopy-bandwidth":0,"max-cpu-throttle":99,"multifd-compression":"none",)"
  R"("multifd-zlib-level":1,"multifd-zstd-level":1,"x-vcpu-dirty-limit-period":1000,)"
  R"("vcpu-dirty-limit":1,"mode":"normal","zero-page-detection":"multifd"})";

constexpr const char* qemu91_capabilities[] = {"xbzrle",
                                               "rdma-pin-all",
                                               "auto-converge",
                                               "zero-blocks",
                                               "events",
                                               "postcopy-ram",
                                               "x-colo",
                                               "release-ram",
                                               "return-path",
                                               "pause-before-switchover",
                                               "multifd",
                                               "dirty-bitmaps",
                                               "postcopy-blocktime",
                                               "late-block-activate",
                                               "x-ignore-shared",
                                               "validate-uuid",
                                               "background-snapshot",
                                               "zero-copy-send",
                                               "postcopy-preempt",
                                               "switchover-ack",
                                               "dirty-limit",
                                               "mapped-ram"};

json::array caps(std::initializer_list<std::pair<const char*, bool>> list) {
  json::array a;
  for (const auto& [name, on] : list)
    a.push_back(json::object{{"capability", name}, {"state", on}});
  return a;
}

} // namespace

TEST(migration_settings, defaults_names_and_order_match_qemu_9_1) {
  migration_settings s;
  EXPECT_EQ(json::serialize(s.query_parameters()), qemu91_parameters);
  const auto c = s.query_capabilities();
  ASSERT_EQ(c.size(), std::size(qemu91_capabilities));
  for (size_t i = 0; i < c.size(); ++i) {
    EXPECT_EQ(c[i].at("capability"), qemu91_capabilities[i]) << i;
    EXPECT_EQ(c[i].at("state"), false) << qemu91_capabilities[i];
  }
}

TEST(migration_settings, parameters_set_and_read_back) {
  migration_settings s;
  ASSERT_FALSE(s.set_parameters({{"downtime-limit", 500},
                                 {"multifd-channels", 4},
                                 {"multifd-compression", "zstd"},
                                 {"tls-creds", "tls0"}},
                                false));
  EXPECT_EQ(s.parameter("downtime-limit"), 500);
  EXPECT_EQ(s.parameter("multifd-channels"), 4);
  EXPECT_EQ(s.parameter("multifd-compression"), "zstd");
  ASSERT_FALSE(s.set_parameters({{"tls-creds", nullptr}}, false));
  EXPECT_EQ(s.parameter("tls-creds"), "") << "null resets a TLS option, as in QEMU";
  EXPECT_FALSE(s.query_parameters().contains("block-bitmap-mapping"));
  ASSERT_FALSE(s.set_parameters({{"block-bitmap-mapping", json::array{}}}, false));
  EXPECT_EQ(s.query_parameters().at("block-bitmap-mapping"), json::array{})
    << "shown once set, even when empty";
}

TEST(migration_settings, parameter_cross_checks_refuse_and_change_nothing) {
  struct bad_case {
    json::object args;
    const char* desc;
  };
  const std::vector<bad_case> cases = {
    {{{"throttle-trigger-threshold", 0}},
     "Parameter 'throttle_trigger_threshold' expects an integer in the range of 1 to 100"},
    {{{"cpu-throttle-initial", 0}},
     "Parameter 'cpu_throttle_initial' expects an integer in the range of 1 to 99"},
    {{{"cpu-throttle-increment", 100}},
     "Parameter 'cpu_throttle_increment' expects an integer in the range of 1 to 99"},
    {{{"downtime-limit", 2000001}},
     "Parameter 'downtime_limit' expects an integer in the range of 0 to 2000000 ms"},
    {{{"multifd-channels", 0}}, "Parameter 'multifd_channels' expects a value between 1 and 255"},
    {{{"multifd-zlib-level", 10}},
     "Parameter 'multifd_zlib_level' expects a value between 0 and 9"},
    {{{"multifd-zstd-level", 21}},
     "Parameter 'multifd_zstd_level' expects a value between 0 and 20"},
    {{{"xbzrle-cache-size", 1000000}},
     "Parameter 'xbzrle_cache_size' expects a power of two no less than the target page size"},
    {{{"xbzrle-cache-size", 2048}},
     "Parameter 'xbzrle_cache_size' expects a power of two no less than the target page size"},
    {{{"max-cpu-throttle", 10}},
     "Parameter 'max_cpu_throttle' expects an integer in the range of cpu_throttle_initial to 99"},
    {{{"cpu-throttle-initial", 50}, {"max-cpu-throttle", 40}},
     "Parameter 'max_cpu_throttle' expects an integer in the range of cpu_throttle_initial to 99"},
    {{{"announce-step", 0}}, "Parameter 'announce_step' expects a value between 0 and 10000"},
    {{{"announce-rounds", 1001}}, "Parameter 'announce_rounds' expects a value between 0 and 1000"},
    {{{"x-vcpu-dirty-limit-period", 0}},
     "Parameter 'x-vcpu-dirty-limit-period' expects a value between 1 and 1000"},
    {{{"vcpu-dirty-limit", 0}}, "Parameter 'vcpu_dirty_limit' must be greater than 1 MB/s"},
    {{{"multifd-compression", "qpl"}},
     "Parameter 'multifd-compression' value 'qpl' is not supported on this host"},
    {{{"multifd-compression", "uadk"}},
     "Parameter 'multifd-compression' value 'uadk' is not supported on this host"},
  };
  for (const auto& c : cases) {
    migration_settings s;
    const auto before = json::serialize(s.query_parameters());
    // A valid member beside the bad one must not be applied either.
    json::object args = c.args;
    args["downtime-limit"] = args.contains("downtime-limit") ? args["downtime-limit"] : 777;
    const auto err = s.set_parameters(args, false);
    ASSERT_TRUE(err) << json::serialize(c.args);
    EXPECT_EQ(*err, c.desc);
    EXPECT_EQ(json::serialize(s.query_parameters()), before) << "all or nothing";
  }
}

TEST(migration_settings, capability_rules) {
  struct cap_case {
    json::array set;
    const char* desc; // nullptr: accepted
  };
  const std::vector<cap_case> cases = {
    {caps({{"events", true}, {"multifd", true}}), nullptr},
    {caps({{"multifd", true}, {"xbzrle", true}}), "Multifd is not compatible with xbzrle"},
    {caps({{"switchover-ack", true}}),
     "Capability 'switchover-ack' requires capability 'return-path'"},
    {caps({{"switchover-ack", true}, {"return-path", true}}), nullptr},
    {caps({{"postcopy-preempt", true}}), "Postcopy preempt requires postcopy-ram"},
    {caps({{"postcopy-ram", true}, {"x-ignore-shared", true}}),
     "Postcopy is not compatible with ignore-shared"},
    {caps({{"background-snapshot", true}, {"postcopy-ram", true}}),
     "Background-snapshot is not compatible with postcopy-ram"},
    {caps({{"background-snapshot", true}, {"multifd", true}}),
     "Background-snapshot is not compatible with multifd"},
    {caps({{"zero-copy-send", true}}),
     "Zero copy only available for non-compressed non-TLS multifd migration"},
    {caps({{"zero-copy-send", true}, {"multifd", true}}), nullptr},
    {caps({{"mapped-ram", true}, {"xbzrle", true}}),
     "Mapped-ram migration is incompatible with xbzrle"},
    {caps({{"mapped-ram", true}, {"postcopy-ram", true}}),
     "Mapped-ram migration is incompatible with postcopy"},
    {caps({{"dirty-limit", true}}),
     "dirty-limit requires KVM with accelerator property 'dirty-ring-size' set"},
    {caps({{"dirty-limit", true}, {"auto-converge", true}}),
     "dirty-limit conflicts with auto-converge either of then available currently"},
    {caps({{"x-colo", true}, {"postcopy-ram", true}}), "COLO is not compatible with postcopy"},
  };
  for (const auto& c : cases) {
    migration_settings s;
    const auto err = s.set_capabilities(c.set, false);
    if (c.desc == nullptr) {
      EXPECT_FALSE(err) << json::serialize(c.set) << ": " << err.value_or("");
      for (const auto& e : c.set)
        EXPECT_EQ(s.capability(e.at("capability").as_string()), e.at("state").as_bool());
    } else {
      ASSERT_TRUE(err) << json::serialize(c.set);
      EXPECT_EQ(*err, c.desc);
      EXPECT_FALSE(s.capability(c.set[0].at("capability").as_string())) << "nothing applied";
    }
  }
  migration_settings ring{{.kvm_dirty_ring = true}};
  EXPECT_FALSE(ring.set_capabilities(caps({{"dirty-limit", true}}), false));
}

TEST(migration_settings, rules_that_involve_both_capabilities_and_parameters) {
  migration_settings s;
  ASSERT_FALSE(s.set_capabilities(caps({{"zero-copy-send", true}, {"multifd", true}}), false));
  EXPECT_EQ(s.set_parameters({{"multifd-compression", "zlib"}}, false).value_or(""),
            "Zero copy only available for non-compressed non-TLS multifd migration");
  migration_settings t;
  ASSERT_FALSE(t.set_parameters({{"tls-creds", "tls0"}}, false));
  EXPECT_TRUE(t.set_capabilities(caps({{"zero-copy-send", true}, {"multifd", true}}), false));
  migration_settings m;
  ASSERT_FALSE(m.set_capabilities(caps({{"mapped-ram", true}}), false));
  EXPECT_EQ(m.set_parameters({{"tls-creds", "x"}}, false).value_or(""),
            "Mapped-ram only available for non-compressed non-TLS multifd migration");
}

TEST(migration_settings, during_a_migration_only_live_parameters_change) {
  migration_settings s;
  EXPECT_EQ(s.set_capabilities(caps({{"events", true}}), true).value_or(""),
            "There's a migration process in progress");
  EXPECT_FALSE(s.set_parameters({{"max-bandwidth", 1000}, {"downtime-limit", 50}}, true));
  EXPECT_EQ(s.parameter("max-bandwidth"), 1000);
  EXPECT_EQ(s.set_parameters({{"multifd-channels", 8}}, true).value_or(""),
            "Parameter 'multifd-channels' cannot be changed while a migration is in progress");
  EXPECT_EQ(s.parameter("multifd-channels"), 2);
}

TEST(migration_settings, every_schema_parameter_has_a_default) {
  // The constructor aborts on a parameter without a default; reaching the
  // end means the table covers the schema. The table has nothing extra:
  migration_settings s;
  for (const auto& kv : migration_settings::defaults())
    EXPECT_TRUE(s.query_parameters().contains(kv.key())) << kv.key();
}

namespace {

struct legacy_fixture : ::testing::Test {
  void SetUp() override {
    synthetic_guest_config cfg;
    cfg.memory = {memory_backend::kind::ram, 2u << 20, {}, false};
    cfg.ws_pages = 1;
    auto g = synthetic_guest::create(cfg);
    ASSERT_TRUE(g);
    guest = std::move(*g);
    monitor = std::make_unique<qmp_monitor>(
      *guest, vm_identity{}, [](const std::string&) {}, [] {});
  }
  qmp_result run(const std::string& cmd, const json::object& args = {}) {
    return monitor->execute(cmd, args);
  }
  std::string error(const std::string& cmd, const json::object& args = {}) {
    auto r = run(cmd, args);
    auto* f = std::get_if<qmp_failure>(&r);
    return f != nullptr ? f->desc : "<ok>";
  }
  std::unique_ptr<synthetic_guest> guest;
  std::unique_ptr<qmp_monitor> monitor;
};

} // namespace

TEST_F(legacy_fixture, query_migrate_is_empty_before_any_migration) {
  EXPECT_EQ(std::get<json::value>(run("query-migrate")), json::object{});
}

TEST_F(legacy_fixture, set_and_query_through_qmp) {
  EXPECT_EQ(error("migrate-set-parameters", {{"downtime-limit", 123}}), "<ok>");
  EXPECT_EQ(std::get<json::value>(run("query-migrate-parameters")).at("downtime-limit"), 123);
  EXPECT_EQ(error("migrate-set-parameters", {{"multifd-compression", "lz4"}}),
            "Parameter 'multifd-compression' does not accept value 'lz4'");
  EXPECT_EQ(error("migrate-set-parameters", {{"max-cpu-throttle", 256}}),
            "Parameter 'max-cpu-throttle' expects uint8");
  EXPECT_EQ(error("migrate-set-capabilities",
                  {{"capabilities", caps({{"events", true}, {"pause-before-switchover", true}})}}),
            "<ok>");
  const auto c = std::get<json::value>(run("query-migrate-capabilities")).as_array();
  EXPECT_EQ(c[4], json::parse(R"({"capability":"events","state":true})"));
  EXPECT_EQ(c[9], json::parse(R"({"capability":"pause-before-switchover","state":true})"));
}

TEST_F(legacy_fixture, legacy_commands_map_onto_parameters) {
  EXPECT_EQ(error("migrate_set_speed", {{"value", 1048576}}), "<ok>");
  EXPECT_EQ(monitor->settings().parameter("max-bandwidth"), 1048576);
  EXPECT_EQ(error("migrate_set_downtime", {{"value", 0.5}}), "<ok>");
  EXPECT_EQ(monitor->settings().parameter("downtime-limit"), 500);
  EXPECT_EQ(error("migrate_set_downtime", {{"value", 2}}), "<ok>");
  EXPECT_EQ(monitor->settings().parameter("downtime-limit"), 2000);
  EXPECT_EQ(error("migrate-set-cache-size", {{"value", 1u << 20}}), "<ok>");
  EXPECT_EQ(std::get<json::value>(run("query-migrate-cache-size")), 1u << 20);
  EXPECT_EQ(error("migrate-set-cache-size", {{"value", 1000}}),
            "Parameter 'xbzrle_cache_size' expects a power of two no less than the target "
            "page size");
  EXPECT_EQ(error("migrate_set_downtime", {{"value", 2001}}),
            "Parameter 'downtime_limit' expects an integer in the range of 0 to 2000 seconds");
  EXPECT_EQ(error("migrate_set_downtime", {{"value", "1"}}),
            "Invalid parameter type for 'value', expected: number");
  EXPECT_EQ(error("migrate_set_speed", {}), "Parameter 'value' is missing");
  EXPECT_EQ(error("migrate_set_speed", {{"value", -1}}), "Parameter 'value' expects size");
  EXPECT_EQ(error("query-migrate-cache-size", {{"value", 1}}), "Parameter 'value' is unexpected");
}
