#include "agent/transport/migration_address.hpp"

#include <boost/json.hpp>
#include <gtest/gtest.h>

using namespace ferry;
namespace json = boost::json;

namespace {

migration_address ok(const std::string& uri) {
  auto r = parse_migration_uri(uri);
  if (auto* e = std::get_if<std::string>(&r)) {
    ADD_FAILURE() << uri << ": " << *e;
    return {};
  }
  return std::get<migration_address>(r);
}

std::string bad(const json::value* uri, const json::value* channels) {
  auto r = parse_migration_target(uri, channels);
  auto* e = std::get_if<std::string>(&r);
  return e != nullptr ? *e : "(accepted)";
}

} // namespace

TEST(migration_address, uris_as_qemu_writes_them) {
  auto t = ok("tcp:127.0.0.1:4444");
  EXPECT_EQ(t.type, migration_address::kind::tcp);
  EXPECT_EQ(t.host, "127.0.0.1");
  EXPECT_EQ(t.port, 4444);
  EXPECT_EQ(ok("tcp::4446").host, "0.0.0.0");
  EXPECT_EQ(ok("tcp:[::1]:7").host, "::1");
  EXPECT_EQ(ok("tcp:0:4446,ipv4").port, 4446);
  auto u = ok("unix:/run/mig.sock");
  EXPECT_EQ(u.type, migration_address::kind::unix_socket);
  EXPECT_EQ(u.path, "/run/mig.sock");
  auto x = ok("exec:gzip -c > /tmp/x");
  EXPECT_EQ(x.argv, (std::vector<std::string>{"/bin/sh", "-c", "gzip -c > /tmp/x"}));
  EXPECT_FALSE(x.bidirectional());
  auto f = ok("file:/tmp/vm.state,offset=0x1000");
  EXPECT_EQ(f.path, "/tmp/vm.state");
  EXPECT_EQ(f.offset, 0x1000u);
  EXPECT_EQ(ok("file:/tmp/vm.state,offset=512").offset, 512u);
}

TEST(migration_address, bad_uris_say_why) {
  for (const auto& [uri, why] : std::vector<std::pair<std::string, std::string>>{
         {"tcp:host", "is not host:port"},
         {"tcp:h:99999", "port '99999' is not a number"},
         {"rdma:1.2.3.4:5", "RDMA migration is not supported by Ferry"},
         {"fd:3", "fd: migration is not supported"},
         {"ftp:x", "unknown migration protocol: ftp:x"},
         {"file:/x,offset=zz", "bad offset"},
         {"unix:", "needs a socket path"}}) {
    auto r = parse_migration_uri(uri);
    ASSERT_TRUE(std::holds_alternative<std::string>(r)) << uri;
    EXPECT_NE(std::get<std::string>(r).find(why), std::string::npos)
      << uri << ": " << std::get<std::string>(r);
  }
}

TEST(migration_address, channels_are_the_same_addresses_as_objects) {
  const json::value inet = json::parse(R"([{"channel-type":"main","addr":
    {"transport":"socket","type":"inet","host":"10.0.0.1","port":"1050"}}])");
  auto r = parse_migration_target(nullptr, &inet);
  ASSERT_TRUE(std::holds_alternative<migration_address>(r));
  EXPECT_EQ(std::get<migration_address>(r).describe(), "tcp:10.0.0.1:1050");
  const json::value exec = json::parse(R"([{"channel-type":"main","addr":
    {"transport":"exec","args":["/bin/cat"]}}])");
  r = parse_migration_target(nullptr, &exec);
  ASSERT_TRUE(std::holds_alternative<migration_address>(r));
  EXPECT_EQ(std::get<migration_address>(r).argv, std::vector<std::string>{"/bin/cat"});
  const json::value file = json::parse(R"([{"channel-type":"main","addr":
    {"transport":"file","filename":"/tmp/s","offset":4096}}])");
  r = parse_migration_target(nullptr, &file);
  ASSERT_TRUE(std::holds_alternative<migration_address>(r));
  EXPECT_EQ(std::get<migration_address>(r).offset, 4096u);

  const json::value uri = "tcp:1.2.3.4:5";
  EXPECT_EQ(bad(&uri, &inet), "need either 'uri' or 'channels' argument");
  EXPECT_EQ(bad(nullptr, nullptr), "need either 'uri' or 'channels' argument");
  const json::value two = json::parse(R"([{"channel-type":"main","addr":{"transport":"file",
    "filename":"/a"}},{"channel-type":"main","addr":{"transport":"file","filename":"/b"}}])");
  EXPECT_EQ(bad(nullptr, &two), "Channel list has more than one entries");
  const json::value vsock = json::parse(R"([{"channel-type":"main","addr":
    {"transport":"socket","type":"vsock","cid":"3","port":"5"}}])");
  EXPECT_NE(bad(nullptr, &vsock).find("not supported"), std::string::npos);
}
