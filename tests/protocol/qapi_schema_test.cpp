#include "protocol/qapi_catalog.hpp"
#include "protocol/qapi_examples.hpp"
#include "protocol/qapi_schema.hpp"

#include <boost/json.hpp>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>

using namespace ferry::qapi;
namespace json = boost::json;

namespace {

std::string error_of(std::string_view text) {
  auto r = parse_schema(text);
  return r ? std::string{"<parsed>"} : caf::to_string(r.error());
}

std::string slurp(const std::string& path) {
  std::ifstream in{path, std::ios::binary};
  return {std::istreambuf_iterator<char>(in), {}};
}

} // namespace

TEST(qapi_schema, reads_expressions_with_comments) {
  auto r = parse_schema(R"(# header
##
# @Foo: doc with 'quotes' and { braces }
##
{ 'struct': 'Foo',
  'data': { 'a': 'int', '*b': ['str'] },   # trailing comment
  'features': [ 'unstable' ] }
{ 'command': 'go', 'allow-oob': true, 'boxed': false }
)");
  ASSERT_TRUE(r) << caf::to_string(r.error());
  ASSERT_EQ(r->size(), 2U);
  EXPECT_EQ((*r)[0].at("data").at("*b"), json::array{"str"});
  EXPECT_EQ((*r)[1].at("allow-oob"), true);
  EXPECT_EQ((*r)[1].at("boxed"), false);
}

TEST(qapi_schema, errors_name_line_and_column) {
  EXPECT_NE(error_of("{ 'a': 1 }").find("line 1, column 8: unexpected character '1'"),
            std::string::npos);
  EXPECT_NE(error_of("\n{ 'a': 'b").find("unterminated string"), std::string::npos);
  EXPECT_NE(error_of("{ 'a': 'b', 'a': 'c' }").find("duplicate key 'a'"), std::string::npos);
  EXPECT_NE(error_of("[ 'a' ]").find("must be a dictionary"), std::string::npos);
  EXPECT_NE(error_of("{ 'a' 'b' }").find("expected ':'"), std::string::npos);
  EXPECT_NE(error_of("{ 'a': ['b' 'c'] }").find("expected ',' or ']'"), std::string::npos);
  EXPECT_NE(error_of("{ 'a': 'x\\y' }").find("escapes"), std::string::npos);
  EXPECT_NE(error_of(std::string(100, '[')).find("nesting too deep"), std::string::npos);
  EXPECT_NE(error_of("{'a':" + std::string(100, '[')).find("nesting too deep"), std::string::npos);
  EXPECT_EQ(error_of(""), "<parsed>");
}

TEST(qapi_schema, numbered_listings_lose_header_and_numbers) {
  const std::string listing = "title\n[repo] / path\nblob123\n1 # c\n3 { 'enum': 'E',\n"
                              "4   'data': [ 'x' ] }\n";
  EXPECT_EQ(strip_numbered_listing(listing), "# c\n{ 'enum': 'E',\n  'data': [ 'x' ] }\n");
  auto r = parse_schema(strip_numbered_listing(listing));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->at(0).at("enum"), "E");
}

TEST(qapi_examples, requests_replies_and_events) {
  const auto ex = extract_examples(R"(##
# Example:
#
#     -> { "execute": "go",
#          "arguments": { "n": 1 } }
#     <- { "return": {} }
#
#     <- { "event": "GONE",
#          "data": { "x": [1, 2] } }
#
#     -> { "execute": "broken" },
#         "arguments": {} }
##
{ 'command': 'go' }
)");
  ASSERT_EQ(ex.size(), 2U);
  EXPECT_EQ(ex[0].at("request"), json::parse(R"({"execute":"go","arguments":{"n":1}})"));
  EXPECT_EQ(ex[0].at("reply"), json::parse(R"({"return":{}})"));
  EXPECT_TRUE(ex[1].at("request").is_null()) << "an event example has no request";
  EXPECT_EQ(ex[1].at("reply").at("event"), "GONE");
}

TEST(qapi_catalog, the_embedded_migration_schema) {
  const auto& c = catalog::migration();
  EXPECT_EQ(c.commands().size(), 29U);
  EXPECT_EQ(c.commands().front(), "query-migrate");
  EXPECT_NE(std::find(c.commands().begin(), c.commands().end(), "migrate-recover"),
            c.commands().end());
  EXPECT_EQ(c.events(), (std::vector<std::string>{"MIGRATION", "MIGRATION_PASS", "COLO_EXIT",
                                                  "UNPLUG_PRIMARY"}));
  EXPECT_EQ(
    c.enum_values("MigrationStatus"),
    (std::vector<std::string>{"none", "setup", "cancelling", "cancelled", "active",
                              "postcopy-active", "postcopy-paused", "postcopy-recover", "completed",
                              "failed", "colo", "pre-switchover", "device", "wait-unplug"}));
  ASSERT_NE(c.find("MigrationParameters"), nullptr);
  EXPECT_TRUE(c.find("MigrationParameters")->contains("struct"));
  EXPECT_EQ(c.find("no-such-thing"), nullptr);
  EXPECT_TRUE(c.enum_values("MigrationParameters").empty());
}

// The committed catalog is exactly what ferry-qapi-extract derives from the
// specification seed — checked wherever shared/seeds sits beside the repo.
TEST(qapi_catalog, matches_the_specification_seed) {
  const std::string seed = std::string{FERRY_SEED_DIR} + "/001_dd6327cff098f66f.normalized.txt";
  if (!std::filesystem::exists(seed))
    GTEST_SKIP() << "specification seed not found at " << seed;
  auto exprs = parse_schema(strip_numbered_listing(slurp(seed)));
  ASSERT_TRUE(exprs) << caf::to_string(exprs.error());
  json::array want;
  for (auto& e : *exprs)
    if (!e.contains("include"))
      want.push_back(e);
  const auto committed =
    json::parse(slurp(std::string{FERRY_SOURCE_DIR} + "/protocol/qapi/migration.json"));
  EXPECT_EQ(committed, json::value(want)) << "regenerate with: build/tools/ferry-qapi-extract "
                                          << seed << " protocol/qapi/migration.json";
}
