#include "protocol/qmp_framing.hpp"

#include <boost/json.hpp>
#include <gtest/gtest.h>

using namespace ferry::qmp;
namespace json = boost::json;

namespace {

std::vector<std::string> kinds(const std::vector<framed>& out) {
  std::vector<std::string> k;
  k.reserve(out.size());
  for (const auto& f : out)
    k.push_back(std::holds_alternative<json::value>(f) ? json::serialize(std::get<json::value>(f))
                                                       : "ERR");
  return k;
}

} // namespace

TEST(qmp_framer, several_values_in_one_read) {
  framer f;
  EXPECT_EQ(kinds(f.feed("{\"a\":1}{\"b\":2}\r\n {\"c\":3}\n")),
            (std::vector<std::string>{"{\"a\":1}", "{\"b\":2}", "{\"c\":3}"}));
}

TEST(qmp_framer, a_value_split_at_every_byte) {
  const std::string msg = "{\"execute\":\"query-status\",\"id\":[1,\"x\"]}\n";
  framer f;
  std::vector<framed> all;
  for (char c : msg)
    for (auto& v : f.feed(std::string(1, c)))
      all.push_back(std::move(v));
  ASSERT_EQ(all.size(), 1U);
  EXPECT_EQ(json::serialize(std::get<json::value>(all[0])),
            "{\"execute\":\"query-status\",\"id\":[1,\"x\"]}");
}

TEST(qmp_framer, malformed_json_is_reported_and_the_next_line_parses) {
  framer f;
  auto out = f.feed("{\"execute\": tru}\n{\"execute\":\"stop\"}\n");
  EXPECT_EQ(kinds(out), (std::vector<std::string>{"ERR", "{\"execute\":\"stop\"}"}));
  EXPECT_NE(std::get<std::string>(out[0]).find("JSON parse error"), std::string::npos);
  // The bad line may also arrive in pieces.
  EXPECT_EQ(kinds(f.feed("{]")), (std::vector<std::string>{"ERR"}));
  EXPECT_TRUE(f.feed(" garbage continues").empty());
  EXPECT_EQ(kinds(f.feed("\n[1]\n")), (std::vector<std::string>{"[1]"}));
}

TEST(qmp_framer, nesting_is_capped) {
  framer f;
  const std::string deep = std::string(framer::max_depth + 10, '[');
  auto out = f.feed(deep + "\n");
  ASSERT_EQ(out.size(), 1U);
  EXPECT_TRUE(std::holds_alternative<std::string>(out[0]));
}

TEST(qmp_framer, whitespace_alone_yields_nothing) {
  framer f;
  EXPECT_TRUE(f.feed(" \r\n\t ").empty());
  EXPECT_EQ(kinds(f.feed("{}")), (std::vector<std::string>{"{}"}));
}
