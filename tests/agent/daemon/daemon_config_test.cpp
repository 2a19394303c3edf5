#include "agent/daemon/daemon_config.hpp"

#include "agent/cli/qemu_opts.hpp"
#include "agent/cli/vm_config.hpp"
#include "agent/daemon/guest_process.hpp"
#include "common/error.hpp"

#include <gtest/gtest.h>

namespace ferry {
namespace {

// An agent.toml; `migration` adds lines to its [migration] table.
std::string agent_toml(const std::string& migration = {}) {
  return R"(
host = "host-a"
[control]
listen = "0.0.0.0:47200"
[tls]
ca = "ca.pem"
cert = "a.pem"
key = "a-key.pem"
[migration]
ca = "hosts-ca.pem"
)" + migration +
         R"([paths]
state_dir = "/var/lib/ferry"
run_dir = "/run/ferry"
)";
}
const std::string base = agent_toml();

TEST(daemon_config, reads_the_file_with_defaults) {
  auto c = parse_daemon_config(base, "a.toml");
  ASSERT_TRUE(c) << describe(c.error());
  EXPECT_EQ(c->host_name, "host-a");
  EXPECT_EQ(c->control.host, "0.0.0.0");
  EXPECT_EQ(c->control.port, 47200);
  EXPECT_EQ(c->migration_port_min, 49152);
  EXPECT_EQ(c->memory, 0U);
  EXPECT_EQ(c->guest_paths.images, std::vector<std::string>{"/var/lib/ferry/images"});
  EXPECT_EQ(c->guest_paths.memory, std::vector<std::string>{"/var/lib/ferry/memory"});
  auto d =
    parse_daemon_config(agent_toml("port_min = 5000\nport_max = 5001\naddress = \"10.0.0.1\"\n") +
                          "[capacity]\nmemory = \"16G\"\n",
                        "a.toml");
  ASSERT_TRUE(d) << describe(d.error());
  EXPECT_EQ(d->memory, uint64_t{16} << 30);
  EXPECT_EQ(d->migration_port_max, 5001);
  EXPECT_EQ(d->migration_address, "10.0.0.1");
}

TEST(daemon_config, mistakes_are_named) {
  auto expect_error = [](const std::string& text, const std::string& needle) {
    auto c = parse_daemon_config(text, "a.toml");
    ASSERT_FALSE(c) << text;
    EXPECT_NE(describe(c.error()).find(needle), std::string::npos) << describe(c.error());
  };
  expect_error("host = \n", "a.toml:");
  expect_error("host = \"x\"\n", "control.listen");
  expect_error(agent_toml("port_min = 10\nport_max = 5\n"), "port_min <= port_max");
  auto no_ca = base;
  no_ca.erase(no_ca.find("ca = \"hosts-ca.pem\"\n"), 20);
  expect_error(no_ca, "'migration.ca'");
  expect_error(base + "[capacity]\nmemory = \"lots\"\n", "not a size");
  expect_error(base + "host2 = 1\n[control]\n", "a.toml:");
  expect_error(base + "images = [\"images\"]\n", "absolute directories, not 'images'");
  auto empty_key = base;
  empty_key.replace(empty_key.find("\"a-key.pem\""), 11, "\"\"");
  expect_error(empty_key, "'tls.key' must name a PEM file");
}

guest_spec spec() {
  guest_spec s;
  s.name = "vm-1";
  s.memory = 64 << 20;
  s.vcpus = 2;
  s.drive = "/img/guest.img";
  return s;
}

TEST(guest_process, builds_the_one_guest_command_line_the_parser_accepts) {
  auto s = spec();
  s.incoming = true;
  s.dirty_ring_size = 1024;
  auto args = vm_arguments(s, "/run/ferry");
  auto cfg = parse_vm_args(args);
  ASSERT_TRUE(cfg) << describe(cfg.error());
  EXPECT_EQ(cfg->name, "vm-1");
  EXPECT_EQ(cfg->smp, 2U);
  EXPECT_EQ(cfg->dirty_ring_size, 1024U);
  ASSERT_TRUE(cfg->incoming);
  EXPECT_EQ(*cfg->incoming, "defer");
  ASSERT_EQ(cfg->qmp.size(), 1U);
  EXPECT_EQ(cfg->qmp[0].path, "/run/ferry/vm-1.qmp");
  EXPECT_EQ(cfg->serial_path, "/run/ferry/vm-1.serial");
  EXPECT_EQ(cfg->colo_fence_ms, colo_fence_ms) << "a cluster's COLO primary fences itself";
}

// Daemon-mode guests carry the migration TLS objects; an incoming one also
// the authz object that admits only its source host.
TEST(guest_process, carries_migration_tls_and_authz_for_its_peer) {
  auto s = spec();
  s.incoming = true;
  s.migration_peer = "host-a";
  auto cfg = parse_vm_args(vm_arguments(s, "/run/ferry", "/var/lib/ferry/migration-tls"));
  ASSERT_TRUE(cfg) << describe(cfg.error());
  ASSERT_EQ(cfg->tls_creds.size(), 2U);
  EXPECT_EQ(cfg->tls_creds[0].id, migration_tls_in);
  EXPECT_TRUE(cfg->tls_creds[0].server);
  EXPECT_TRUE(cfg->tls_creds[0].verify_peer);
  EXPECT_EQ(cfg->tls_creds[1].id, migration_tls_out);
  EXPECT_FALSE(cfg->tls_creds[1].server);
  EXPECT_EQ(cfg->tls_creds[1].dir, "/var/lib/ferry/migration-tls");
  ASSERT_EQ(cfg->authz.size(), 1U);
  EXPECT_EQ(cfg->authz[0].id, migration_authz);
  EXPECT_EQ(cfg->authz[0].identity, "CN=host-a,OU=host,O=Ferry");
  s.migration_peer.clear();
  cfg = parse_vm_args(vm_arguments(s, "/run/ferry", "/tls"));
  ASSERT_TRUE(cfg);
  EXPECT_TRUE(cfg->authz.empty()) << "no peer, no authz object";
  s.migration_peer = "host-a,identity=CN=evil";
  EXPECT_FALSE(check_guest_spec(s)) << "a peer is a host name, nothing more";
}

TEST(guest_process, refuses_names_that_are_not_path_components_and_bad_sizes) {
  EXPECT_TRUE(check_guest_spec(spec()));
  for (const std::string& bad :
       std::vector<std::string>{"", "../etc", "a/b", ".hidden", std::string(65, 'x'), "sp ace"}) {
    auto s = spec();
    s.name = bad;
    auto ok = check_guest_spec(s);
    ASSERT_FALSE(ok) << bad;
    EXPECT_NE(describe(ok.error()).find("must be 1-64 characters"), std::string::npos);
  }
  auto s = spec();
  s.memory = 1000;
  EXPECT_FALSE(check_guest_spec(s));
  s = spec();
  s.accel = "tcg";
  EXPECT_FALSE(check_guest_spec(s));
  s = spec();
  s.dirty_ring_size = 1000; // not a power of two: the one-guest parser says so
  auto ring = check_guest_spec(s);
  ASSERT_FALSE(ring);
  EXPECT_NE(describe(ring.error()).find("dirty-ring-size"), std::string::npos);
}

// A path is a value, never more options: commas reach the guest's command
// line doubled, so "file=/a,format=qcow2" cannot change the drive format or
// "mem-path=/m,share=off" the backend's sharing (found by fuzz_api_json).
TEST(guest_process, commas_in_paths_stay_inside_the_value) {
  auto s = spec();
  s.drive = "/img/a,format=qcow2,";
  s.mem_path = "/dev/shm/m,share=off";
  ASSERT_TRUE(check_guest_spec(s));
  auto cfg = parse_vm_args(vm_arguments(s, "/run/fer,ry"));
  ASSERT_TRUE(cfg) << describe(cfg.error());
  EXPECT_EQ(cfg->drive, "/img/a,format=qcow2,");
  EXPECT_EQ(cfg->backend.mem_path, "/dev/shm/m,share=off");
  ASSERT_EQ(cfg->qmp.size(), 1U);
  EXPECT_EQ(cfg->qmp[0].path, "/run/fer,ry/vm-1.qmp");
  EXPECT_EQ(qemu_opt_escape("a,,b,"), "a,,,,b,,");
}

} // namespace
} // namespace ferry
