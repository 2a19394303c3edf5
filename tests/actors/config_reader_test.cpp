// The TOML reader both daemons' configurations go through: each kind of
// mistake names the file and the key, fallbacks apply only to absent keys.

#include "actors/config_reader.hpp"
#include "common/error.hpp"

#include <gtest/gtest.h>

namespace ferry {
namespace {

caf::error plain(const std::string& msg) {
  return make_ferry_error(errc::invalid_argument, msg);
}

std::string message(const caf::error& e) {
  return describe(e);
}

config_reader read(const std::string& text) {
  auto r = config_reader::parse(text, "c.toml", plain);
  EXPECT_TRUE(r) << message(r.error());
  return *r;
}

TEST(config_reader, values_and_fallbacks) {
  auto r = read("name = \"x\"\n[a]\nn = 7\nflag = false\nlisten = \"[::1]:80\"\n");
  EXPECT_EQ(*r.str("name"), "x");
  EXPECT_EQ(*r.str("missing", "dflt"), "dflt");
  EXPECT_EQ(*r.integer("a.n", 1), 7);
  EXPECT_EQ(*r.integer("a.none", 3), 3);
  EXPECT_EQ(*r.count("a.n", 0), 7U);
  EXPECT_FALSE(*r.boolean("a.flag", true));
  EXPECT_TRUE(*r.boolean("a.none", true));
  auto hp = r.address("a.listen");
  ASSERT_TRUE(hp);
  EXPECT_EQ(hp->host, "::1");
  EXPECT_EQ(hp->port, 80);
}

TEST(config_reader, each_mistake_names_file_and_key) {
  auto r = read("s = 1\n[a]\nn = -1\nf = 2.5\nb = \"yes\"\nlisten = \"nocolon\"\n");
  EXPECT_EQ(message(r.str("x").error()), "c.toml: missing 'x'");
  EXPECT_EQ(message(r.str("s").error()), "c.toml: 's' must be a string");
  EXPECT_EQ(message(r.str("s", "d").error()), "c.toml: 's' must be a string")
    << "a fallback does not excuse a wrong type";
  EXPECT_EQ(message(r.count("a.n", 0).error()), "c.toml: 'a.n' must be a non-negative integer");
  EXPECT_EQ(message(r.integer("a.f", 0).error()), "c.toml: 'a.f' must be an integer");
  EXPECT_EQ(message(r.boolean("a.b", false).error()), "c.toml: 'a.b' must be true or false");
  EXPECT_EQ(message(r.address("a.listen").error()),
            "c.toml: 'a.listen' = 'nocolon' is not HOST:PORT");
  EXPECT_EQ(message(r.tls().error()), "c.toml: missing 'tls.ca'");
}

TEST(config_reader, empty_tls_settings_and_string_lists) {
  auto r = read("[tls]\nca = \"/ca.pem\"\ncert = \"\"\nkey = \"/k.pem\"\n"
                "[paths]\nimages = [\"/a\", \"/b\"]\nbad = [1]\none = \"/a\"\n");
  EXPECT_EQ(message(r.tls().error()), "c.toml: 'tls.cert' must name a PEM file")
    << "an empty TLS setting is refused, not taken as 'none'";
  EXPECT_EQ(*r.strings("paths.images", {}), (std::vector<std::string>{"/a", "/b"}));
  EXPECT_EQ(*r.strings("paths.none", {"/d"}), (std::vector<std::string>{"/d"}));
  EXPECT_EQ(message(r.strings("paths.bad", {}).error()),
            "c.toml: 'paths.bad' must be an array of strings");
  EXPECT_EQ(message(r.strings("paths.one", {}).error()),
            "c.toml: 'paths.one' must be an array of strings");
}

TEST(config_reader, syntax_errors_name_line_and_column) {
  auto r = config_reader::parse("a = 1\nb = \n", "c.toml", plain);
  ASSERT_FALSE(r);
  EXPECT_EQ(message(r.error()).rfind("c.toml:2:", 0), 0U) << message(r.error());
  auto missing = config_reader::load("/nonexistent/c.toml", plain);
  ASSERT_FALSE(missing);
  EXPECT_EQ(message(missing.error()), "cannot read config '/nonexistent/c.toml'");
}

TEST(config_reader, tables_of_an_array_name_their_members) {
  auto r = read("[[agents]]\nname = \"a\"\n[[agents]]\naddress = \"h:1\"\n");
  auto agents = r.tables("agents");
  ASSERT_TRUE(agents);
  ASSERT_EQ(agents->size(), 2U);
  EXPECT_EQ(*(*agents)[0].str("name"), "a");
  EXPECT_EQ(message((*agents)[1].str("name").error()), "c.toml: missing 'agents.name'");
  EXPECT_TRUE(r.tables("none")->empty());
  EXPECT_FALSE(read("agents = 3\n").tables("agents"));
  EXPECT_FALSE(read("agents = [1, 2]\n").tables("agents"));
}

TEST(config_reader, sub_readers_outlive_the_reader_they_came_from) {
  std::vector<config_reader> agents;
  {
    auto r = read("[[agents]]\nname = \"kept\"\n");
    agents = *r.tables("agents");
  }
  EXPECT_EQ(*agents.at(0).str("name"), "kept");
}

} // namespace
} // namespace ferry
