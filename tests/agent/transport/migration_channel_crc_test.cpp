// What a plain channel's record CRC covers, with bytes flipped on the wire
// between two real sockets: every byte of a record without page data, and
// of a page record its prefix and entries but not the page data the reader
// places in guest RAM — that is the switchover digest's to prove
// (engine_digest tests), so a sender may send pages from a running guest.

#include "agent/transport/migration_channel.hpp"
#include "common/error.hpp"

#include <gtest/gtest.h>

#include <sys/socket.h>
#include <unistd.h>

#include <numeric>
#include <string>
#include <vector>

namespace ferry {
namespace {

struct socket_pair {
  unique_fd a;
  unique_fd b;
};

socket_pair make_pair() {
  int fds[2];
  EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
  return {unique_fd{fds[0]}, unique_fd{fds[1]}};
}

// The bytes one record takes on the wire: sent by a real channel, read off
// its socket raw.
std::vector<uint8_t> wire_of(mig::record_type type, std::span<const iovec> parts,
                             size_t placed_from) {
  auto p = make_pair();
  migration_channel tx{std::move(p.a), migration_channel::kind::socket};
  EXPECT_TRUE(tx.send(type, parts, placed_from));
  size_t len = mig::header_size;
  for (const auto& part : parts)
    len += part.iov_len;
  std::vector<uint8_t> wire(len);
  size_t got = 0;
  while (got < len) {
    const ssize_t n = ::read(p.b.get(), wire.data() + got, len - got);
    EXPECT_GT(n, 0);
    if (n <= 0)
      break;
    got += static_cast<size_t>(n);
  }
  return wire;
}

// Reads `wire` back through a channel, the first `head` payload bytes into
// a buffer and the rest placed; the CRC check's verdict.
caf::expected<void> read_back(const std::vector<uint8_t>& wire, size_t head) {
  auto p = make_pair();
  EXPECT_EQ(::write(p.a.get(), wire.data(), wire.size()), static_cast<ssize_t>(wire.size()));
  migration_channel rx{std::move(p.b), migration_channel::kind::socket};
  auto h = rx.receive_header();
  if (!h)
    return h.error();
  std::vector<uint8_t> payload(h->length);
  if (auto ok = rx.read_payload(payload.data(), head); !ok)
    return ok;
  if (auto ok = rx.read_payload(payload.data() + head, h->length - head, true); !ok)
    return ok;
  return rx.end_payload(*h);
}

TEST(migration_channel_crc, covers_a_page_records_head_but_not_its_placed_data) {
  std::vector<uint8_t> head(24);
  std::iota(head.begin(), head.end(), uint8_t{1});
  std::vector<uint8_t> pages(size_t{2} * 4096);
  std::iota(pages.begin(), pages.end(), uint8_t{9});
  const iovec parts[] = {{head.data(), head.size()}, {pages.data(), pages.size()}};
  const auto wire = wire_of(mig::record_type::pages, parts, 1);

  EXPECT_TRUE(read_back(wire, head.size()));
  auto head_flipped = wire;
  head_flipped[mig::header_size + 5] ^= 0x10;
  const auto refused = read_back(head_flipped, head.size());
  ASSERT_FALSE(refused);
  EXPECT_NE(describe(refused.error()).find("checksum mismatch"), std::string::npos)
    << describe(refused.error());
  auto data_flipped = wire;
  data_flipped[mig::header_size + head.size() + 4097] ^= 0x10;
  EXPECT_TRUE(read_back(data_flipped, head.size())) << "page data is the digest's to prove";
}

TEST(migration_channel_crc, covers_every_byte_of_a_record_without_page_data) {
  std::vector<uint8_t> body(5000);
  std::iota(body.begin(), body.end(), uint8_t{3});
  const iovec part{body.data(), body.size()};
  const auto wire = wire_of(mig::record_type::cpu_state, {&part, 1}, SIZE_MAX);
  EXPECT_TRUE(read_back(wire, body.size()));
  for (size_t at : {size_t{0}, size_t{2500}, body.size() - 1}) {
    auto flipped = wire;
    flipped[mig::header_size + at] ^= 0x01;
    EXPECT_FALSE(read_back(flipped, body.size())) << "flipped at " << at;
  }
}

} // namespace
} // namespace ferry
