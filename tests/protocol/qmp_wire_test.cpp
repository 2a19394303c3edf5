#include "protocol/qmp_wire.hpp"

#include <boost/json.hpp>
#include <gtest/gtest.h>

using namespace ferry::qmp;
namespace json = boost::json;

namespace {

json::value parse_line(const std::string& s) {
  EXPECT_GE(s.size(), 2U);
  EXPECT_EQ(s.substr(s.size() - 2), "\r\n");
  return json::parse(s);
}

} // namespace

TEST(qmp_wire, greeting_has_version_and_capabilities) {
  auto g = parse_line(greeting({}, {"oob"}));
  EXPECT_EQ(g.at("QMP").at("version").at("qemu").at("major"), 9);
  EXPECT_EQ(g.at("QMP").at("version").at("qemu").at("minor"), 1);
  EXPECT_EQ(g.at("QMP").at("capabilities"), json::array{"oob"});
}

TEST(qmp_wire, replies_and_errors_echo_the_id) {
  json::value id = {{"n", 7}};
  auto r = parse_line(reply(json::object{{"status", "running"}}, &id));
  EXPECT_EQ(r.at("return").at("status"), "running");
  EXPECT_EQ(r.at("id"), id);
  auto e = parse_line(error(error_class::command_not_found, "nope", &id));
  EXPECT_EQ(e.at("error").at("class"), "CommandNotFound");
  EXPECT_EQ(e.at("error").at("desc"), "nope");
  EXPECT_EQ(e.at("id"), id);
  auto no_id = parse_line(error(error_class::generic_error, "x", nullptr));
  EXPECT_FALSE(no_id.as_object().contains("id"));
}

TEST(qmp_wire, events_carry_a_current_timestamp) {
  const auto now = std::chrono::duration_cast<std::chrono::seconds>(
                     std::chrono::system_clock::now().time_since_epoch())
                     .count();
  auto e = parse_line(event("STOP"));
  EXPECT_EQ(e.at("event"), "STOP");
  const auto secs = e.at("timestamp").at("seconds").as_int64();
  EXPECT_NEAR(static_cast<double>(secs), static_cast<double>(now), 5.0);
  const auto us = e.at("timestamp").at("microseconds").as_int64();
  EXPECT_GE(us, 0);
  EXPECT_LT(us, 1000000);
  auto d = parse_line(event("SHUTDOWN", json::object{{"guest", false}}));
  EXPECT_EQ(d.at("data").at("guest"), false);
}
