#include "protocol/qmp_request.hpp"

#include <boost/json.hpp>
#include <gtest/gtest.h>

using namespace ferry::qmp;
namespace json = boost::json;

namespace {

std::string error_of(const char* text) {
  auto r = parse_request(json::parse(text));
  if (auto* e = std::get_if<envelope_error>(&r))
    return e->desc;
  return "<ok>";
}

} // namespace

TEST(qmp_request, well_formed) {
  auto r =
    parse_request(json::parse(R"({"execute":"pmemsave","arguments":{"val":1},"id":{"x":1}})"));
  auto& req = std::get<request>(r);
  EXPECT_EQ(req.command, "pmemsave");
  EXPECT_EQ(req.arguments.at("val"), 1);
  EXPECT_EQ(*req.id, json::parse(R"({"x":1})"));
  EXPECT_FALSE(req.oob);
  auto oob = parse_request(json::parse(R"({"exec-oob":"migrate-pause"})"));
  EXPECT_TRUE(std::get<request>(oob).oob);
}

TEST(qmp_request, envelope_errors_match_qemu) {
  EXPECT_EQ(error_of("[]"), "QMP input must be a JSON object");
  EXPECT_EQ(error_of("3"), "QMP input must be a JSON object");
  EXPECT_EQ(error_of("{}"), "QMP input lacks member 'execute'");
  EXPECT_EQ(error_of(R"({"execute":1})"), "QMP input member 'execute' must be a string");
  EXPECT_EQ(error_of(R"({"execute":"x","arguments":[]})"),
            "QMP input member 'arguments' must be an object");
  EXPECT_EQ(error_of(R"({"execute":"x","extra":1})"), "QMP input member 'extra' is unexpected");
  EXPECT_EQ(error_of(R"({"execute":"x","exec-oob":"y"})"),
            "QMP input member 'exec-oob' is unexpected");
}

TEST(qmp_request, id_is_kept_even_when_the_envelope_is_bad) {
  auto r = parse_request(json::parse(R"({"id":"abc","arguments":{}})"));
  auto& e = std::get<envelope_error>(r);
  ASSERT_TRUE(e.id);
  EXPECT_EQ(*e.id, "abc");
}
