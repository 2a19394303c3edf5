// A migration channel under TLS, over a socketpair with certificates from
// the deployment's PKI script: what a record's pieces are (headers, page
// lists, pages next to each other in memory or not, spans of several full
// TLS records) must not change what arrives, byte for byte.

#include "agent/transport/migration_channel.hpp"
#include "tests/support/temp_dir.hpp"

#include <gtest/gtest.h>

#include <sys/socket.h>

#include <cstdlib>
#include <future>
#include <numeric>
#include <string>
#include <vector>

namespace ferry {
namespace {

struct tls_pair {
  std::unique_ptr<migration_channel> client;
  std::unique_ptr<migration_channel> server;
};

tls_pair connect_over_tls(const std::string& pki) {
  int fds[2];
  EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
  tls_pair p;
  p.client =
    std::make_unique<migration_channel>(unique_fd{fds[0]}, migration_channel::kind::socket);
  p.server =
    std::make_unique<migration_channel>(unique_fd{fds[1]}, migration_channel::kind::socket);
  auto server_ctx = tls_context::create({"tls0", pki, true, true}, "");
  auto client_ctx = tls_context::create({"tls0", pki, false, true}, "");
  EXPECT_TRUE(server_ctx && client_ctx);
  auto accepted = std::async(std::launch::async, [&] { return p.server->start_tls(**server_ctx); });
  EXPECT_TRUE(p.client->start_tls(**client_ctx));
  EXPECT_TRUE(accepted.get());
  return p;
}

TEST(migration_channel_tls, records_of_every_shape_arrive_byte_for_byte) {
  test::temp_dir tmp;
  const std::string pki = tmp.file("pki");
  const std::string cmd =
    "bash " FERRY_SOURCE_DIR "/deploy/pki/ferry-pki.sh " + pki + " >/dev/null";
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  auto p = connect_over_tls(pki);

  // "Guest memory": 64 pages with distinct bytes.
  std::vector<uint8_t> mem(size_t{64} * 4096);
  std::iota(mem.begin(), mem.end(), uint8_t{7});
  uint8_t header[16];
  std::iota(std::begin(header), std::end(header), uint8_t{200});
  auto at = [&](size_t page, size_t pages = 1) {
    return iovec{mem.data() + page * 4096, pages * 4096};
  };
  const std::vector<std::vector<iovec>> shapes = {
    {{header, 16}, at(0), at(1), at(2)},   // adjacent pages: one span
    {{header, 8}, at(5), at(3), at(9)},    // scattered pages, gathered
    {at(10, 4)},                           // exactly one full record
    {{header, 3}, at(20, 9), {header, 5}}, // a span past the gathered bytes
    {at(30, 12), at(50)},                  // whole records sealed in place
    {{header, 1}},
  };
  auto received = std::async(std::launch::async, [&] {
    std::vector<std::vector<uint8_t>> got;
    for (size_t i = 0; i < shapes.size(); ++i) {
      std::vector<uint8_t> payload;
      auto h = p.server->receive(payload);
      if (!h)
        break;
      got.push_back(std::move(payload));
    }
    return got;
  });
  for (const auto& parts : shapes)
    ASSERT_TRUE(p.client->send(mig::record_type::pages, parts));
  const auto got = received.get();
  ASSERT_EQ(got.size(), shapes.size());
  for (size_t i = 0; i < shapes.size(); ++i) {
    std::vector<uint8_t> want;
    for (const auto& part : shapes[i])
      want.insert(want.end(), static_cast<const uint8_t*>(part.iov_base),
                  static_cast<const uint8_t*>(part.iov_base) + part.iov_len);
    EXPECT_EQ(got[i], want) << "record " << i;
  }
}

} // namespace
} // namespace ferry
