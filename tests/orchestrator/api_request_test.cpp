// What an API request asks for, from method, target and body alone: each
// command with what the request said, and 400/404/405 with a JSON error that
// stays valid JSON whatever bytes the target held.

#include "orchestrator/api_request.hpp"

#include <boost/json.hpp>
#include <gtest/gtest.h>

namespace ferry {
namespace {

api::error error_of(const api::command& c) {
  const auto* e = std::get_if<api::error>(&c);
  EXPECT_NE(e, nullptr);
  return e != nullptr ? *e : api::error{0, ""};
}

TEST(api_request, each_command_carries_what_the_request_said) {
  auto c = api::parse_request("GET", "/api/v1/evacuations", "");
  ASSERT_TRUE(std::holds_alternative<api::list>(c));
  EXPECT_EQ(std::get<api::list>(c).what, "evacuations");
  c = api::parse_request("POST", "/api/v1/migrations", R"({"guest":"vm1","to":"host-b"})");
  ASSERT_TRUE(std::holds_alternative<api::migrate>(c));
  EXPECT_EQ(std::get<api::migrate>(c).guest, "vm1");
  EXPECT_EQ(std::get<api::migrate>(c).to, "host-b");
  c = api::parse_request("POST", "/api/v1/guests", R"({"host":"h","spec":{"name":"vm1"}})");
  ASSERT_TRUE(std::holds_alternative<api::create>(c));
  EXPECT_EQ(std::get<api::create>(c).spec_json, R"({"name":"vm1"})");
  c = api::parse_request("POST", "/api/v1/evacuations", R"({"host":"host-a"})");
  ASSERT_TRUE(std::holds_alternative<api::evacuate>(c));
  EXPECT_EQ(std::get<api::evacuate>(c).host, "host-a");
  c = api::parse_request("POST", "/api/v1/migrations/42/cancel", "");
  ASSERT_TRUE(std::holds_alternative<api::cancel>(c));
  EXPECT_EQ(std::get<api::cancel>(c).id, 42);
  c = api::parse_request("GET", "/api/v1/pairs", "");
  ASSERT_TRUE(std::holds_alternative<api::list>(c));
  EXPECT_EQ(std::get<api::list>(c).what, "pairs");
  c = api::parse_request("POST", "/api/v1/pairs", R"({"guest":"vm1","secondary":"host-c"})");
  ASSERT_TRUE(std::holds_alternative<api::protect>(c));
  EXPECT_EQ(std::get<api::protect>(c).guest, "vm1");
  EXPECT_EQ(std::get<api::protect>(c).secondary, "host-c");
  c = api::parse_request("POST", "/api/v1/pairs", R"({"guest":"vm1"})");
  ASSERT_TRUE(std::holds_alternative<api::protect>(c));
  EXPECT_EQ(std::get<api::protect>(c).secondary, "") << "the orchestrator picks";
  c = api::parse_request("POST", "/api/v1/pairs/vm1/unprotect", "{}");
  ASSERT_TRUE(std::holds_alternative<api::unprotect>(c));
  EXPECT_EQ(std::get<api::unprotect>(c).guest, "vm1");
}

TEST(api_request, malformed_requests_get_the_status_and_a_json_error) {
  EXPECT_EQ(error_of(api::parse_request("GET", "/api/v2/hosts", "")).status, 404U);
  EXPECT_EQ(error_of(api::parse_request("GET", "/api/v1/nothing", "")).status, 404U);
  EXPECT_EQ(error_of(api::parse_request("DELETE", "/api/v1/guests", "")).status, 405U);
  EXPECT_EQ(error_of(api::parse_request("POST", "/api/v1/migrations", "{")).status, 400U);
  EXPECT_EQ(error_of(api::parse_request("POST", "/api/v1/migrations", R"({"guest":7})")).status,
            400U);
  EXPECT_EQ(error_of(api::parse_request("POST", "/api/v1/guests", R"({"host":"h"})")).status, 400U);
  EXPECT_EQ(error_of(api::parse_request("POST", "/api/v1/pairs", R"({"secondary":"h"})")).status,
            400U);
  EXPECT_EQ(error_of(api::parse_request("POST", "/api/v1/pairs//unprotect", "")).status, 404U);
  EXPECT_EQ(error_of(api::parse_request("POST", "/api/v1/pairs/a/b/unprotect", "")).status, 404U);
  const auto bad_id = error_of(api::parse_request("POST", "/api/v1/migrations/4x/cancel", ""));
  EXPECT_EQ(bad_id.status, 400U);
  EXPECT_NE(bad_id.body.find("'4x' is not a migration id"), std::string::npos) << bad_id.body;
  // Found by fuzz_http_request: a target with bytes that are not UTF-8 was
  // echoed into the error, which then was not valid JSON.
  const auto odd = error_of(api::parse_request("GET", "/api/\xff\xfe/hosts%", ""));
  boost::system::error_code ec;
  const auto v = boost::json::parse(odd.body, ec);
  ASSERT_FALSE(ec) << odd.body;
  EXPECT_EQ(v.at("error").as_string(), "no such resource: /api/%FF%FE/hosts%25");
}

} // namespace
} // namespace ferry
