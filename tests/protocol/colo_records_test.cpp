// COLO's records: what each encoder writes its decoder reads back, malformed
// payloads are refused, and the checkpoint sequence takes exactly its one
// message in each step — every edge walked, every other message refused.
#include "protocol/colo_records.hpp"
#include "protocol/migration_stream.hpp"

#include <gtest/gtest.h>

#include <set>
#include <vector>

namespace mig = ferry::mig;

namespace {

std::string why(const caf::error& e) {
  return e ? caf::to_string(e) : std::string{};
}

mig::colo_record msg(mig::colo_message m, uint64_t v) {
  return {m, v};
}

// An exchange brought to `target` through checkpoint 1 (committed: none).
mig::colo_exchange at(mig::colo_step target) {
  using m = mig::colo_message;
  mig::colo_exchange x;
  const std::vector<mig::colo_record> path = {
    msg(m::checkpoint_ready, 0), msg(m::checkpoint_request, 1), msg(m::checkpoint_reply, 1),
    msg(m::vmstate_send, 1),     msg(m::vmstate_size, 4096),    msg(m::vmstate_received, 1)};
  for (const auto& r : path) {
    if (x.step() == target)
      break;
    EXPECT_TRUE(x.take(r));
  }
  EXPECT_EQ(x.step(), target);
  return x;
}

} // namespace

TEST(colo_records, every_message_round_trips) {
  for (uint32_t i = 0; i < mig::colo_message_count; ++i) {
    const mig::colo_record r{static_cast<mig::colo_message>(i), 0x1122334455667788ULL + i};
    const auto bytes = mig::encode(r);
    ASSERT_EQ(bytes.size(), mig::colo_record_size);
    auto back = mig::decode_colo(bytes);
    ASSERT_TRUE(back) << why(back.error());
    EXPECT_EQ(back->message, r.message);
    EXPECT_EQ(back->value, r.value);
  }
  EXPECT_EQ(mig::to_string(mig::colo_message::vmstate_loaded), "vmstate-loaded");
  auto hb = mig::decode_heartbeat(mig::encode_heartbeat(77));
  ASSERT_TRUE(hb);
  EXPECT_EQ(*hb, 77U);
}

TEST(colo_records, malformed_payloads_are_refused_with_the_reason) {
  auto bytes = mig::encode(msg(mig::colo_message::vmstate_send, 3));
  EXPECT_NE(why(mig::decode_colo(std::span{bytes}.first(15)).error()).find("15 bytes"),
            std::string::npos);
  auto unknown = bytes;
  unknown[0] = 7;
  EXPECT_NE(why(mig::decode_colo(unknown).error()).find("unknown COLO message 7"),
            std::string::npos);
  auto reserved = bytes;
  reserved[5] = 1;
  EXPECT_NE(why(mig::decode_colo(reserved).error()).find("reserved"), std::string::npos);
  const std::vector<uint8_t> short_hb(7);
  EXPECT_FALSE(mig::decode_heartbeat(short_hb));
}

TEST(colo_records, the_record_types_are_known_to_the_stream) {
  for (auto t :
       {mig::record_type::colo, mig::record_type::heartbeat, mig::record_type::colo_output}) {
    const auto h = mig::encode_header(t, 16, 0);
    auto back = mig::decode_header(h);
    ASSERT_TRUE(back) << why(back.error());
    EXPECT_EQ(back->type, t);
  }
  EXPECT_STREQ(mig::to_string(mig::record_type::heartbeat), "heartbeat");
  EXPECT_STREQ(mig::to_string(mig::record_type::colo_output), "colo-output");
}

TEST(colo_records, output_records_round_trip_and_bad_ones_are_refused) {
  mig::colo_output_record out{mig::colo_output_kind::output, 4, 1000, {'p', 'a', 's', 's'}};
  auto back = mig::decode_colo_output(mig::encode(out));
  ASSERT_TRUE(back) << why(back.error());
  EXPECT_EQ(back->kind, mig::colo_output_kind::output);
  EXPECT_EQ(back->checkpoint, 4U);
  EXPECT_EQ(back->position, 1000U);
  EXPECT_EQ(back->bytes, out.bytes);
  const mig::colo_output_record released{mig::colo_output_kind::released, 4, 1004, {}};
  back = mig::decode_colo_output(mig::encode(released));
  ASSERT_TRUE(back);
  EXPECT_EQ(back->kind, mig::colo_output_kind::released);
  EXPECT_TRUE(back->bytes.empty());

  auto bytes = mig::encode(out);
  EXPECT_NE(why(mig::decode_colo_output(std::span{bytes}.first(23)).error()).find("23 bytes"),
            std::string::npos);
  auto kind = bytes;
  kind[0] = 3;
  EXPECT_NE(why(mig::decode_colo_output(kind).error()).find("kind 3"), std::string::npos);
  auto reserved = bytes;
  reserved[4] = 1;
  EXPECT_NE(why(mig::decode_colo_output(reserved).error()).find("reserved"), std::string::npos);
  auto base_with_bytes = bytes;
  base_with_bytes[0] = 1;
  EXPECT_NE(why(mig::decode_colo_output(base_with_bytes).error()).find("with output bytes"),
            std::string::npos);
  mig::colo_output_record big{mig::colo_output_kind::output, 1, 0, {}};
  big.bytes.resize(mig::colo_output_max_bytes + 1);
  EXPECT_NE(why(mig::decode_colo_output(mig::encode(big)).error()).find("at most 64 KiB"),
            std::string::npos);
  mig::colo_output_record wrap{mig::colo_output_kind::output, 1, UINT64_MAX - 1, {'a', 'b'}};
  EXPECT_NE(why(mig::decode_colo_output(mig::encode(wrap)).error()).find("overflows"),
            std::string::npos);
}

TEST(colo_exchange, walks_every_edge_and_refuses_every_other_message) {
  const auto edges = mig::colo_edges();
  ASSERT_EQ(edges.size(), mig::colo_step_count) << "one message leads out of each step";
  std::set<mig::colo_step> from;
  for (const auto& e : edges) {
    from.insert(e.from);
    // The edge itself.
    auto x = at(e.from);
    const uint64_t value = e.on == mig::colo_message::checkpoint_ready     ? 0
                           : e.on == mig::colo_message::checkpoint_request ? 1
                           : e.on == mig::colo_message::vmstate_size       ? 4096
                                                                           : 1;
    ASSERT_TRUE(x.take(msg(e.on, value)))
      << mig::to_string(e.from) << " --" << mig::to_string(e.on) << "-->";
    EXPECT_EQ(x.step(), e.to);
    // Every other message in the same step: refused, the step unchanged.
    for (uint32_t i = 0; i < mig::colo_message_count; ++i) {
      const auto other = static_cast<mig::colo_message>(i);
      if (other == e.on)
        continue;
      auto y = at(e.from);
      auto r = y.take(msg(other, 1));
      ASSERT_FALSE(r) << mig::to_string(other) << " accepted in " << mig::to_string(e.from);
      EXPECT_NE(why(r.error()).find("out of turn"), std::string::npos);
      EXPECT_EQ(y.step(), e.from);
    }
  }
  EXPECT_EQ(from.size(), mig::colo_step_count) << "every step has its edge";
}

TEST(colo_exchange, checkpoints_are_numbered_one_after_the_other) {
  using m = mig::colo_message;
  mig::colo_exchange x;
  ASSERT_TRUE(x.take(msg(m::checkpoint_ready, 0)));
  EXPECT_FALSE(x.take(msg(m::checkpoint_request, 2))) << "checkpoint 1 comes first";
  EXPECT_FALSE(x.take(msg(m::checkpoint_request, 0)));
  for (uint64_t n = 1; n <= 3; ++n) {
    ASSERT_TRUE(x.take(msg(m::checkpoint_request, n)));
    EXPECT_EQ(x.checkpoint(), n);
    EXPECT_FALSE(x.take(msg(m::checkpoint_reply, n + 1))) << "a reply for another checkpoint";
    ASSERT_TRUE(x.take(msg(m::checkpoint_reply, n)));
    ASSERT_TRUE(x.take(msg(m::vmstate_send, n)));
    ASSERT_TRUE(x.take(msg(m::vmstate_size, 1000 * n)));
    EXPECT_EQ(x.announced_bytes(), 1000 * n);
    ASSERT_TRUE(x.take(msg(m::vmstate_received, n)));
    EXPECT_EQ(x.committed(), n - 1) << "not committed before vmstate-loaded";
    ASSERT_TRUE(x.take(msg(m::vmstate_loaded, n)));
    EXPECT_EQ(x.committed(), n);
    EXPECT_EQ(x.step(), mig::colo_step::idle);
  }
  EXPECT_FALSE(x.take(msg(m::checkpoint_ready, 0))) << "ready only once";
}
