// Who may use the API: tokens map to roles; no or an unknown token is 401, a
// viewer's POST 403; the tokens file refuses mistakes by line number.

#include "orchestrator/api_auth.hpp"

#include "common/error.hpp"
#include "tests/support/process.hpp"
#include "tests/support/temp_dir.hpp"

#include <gtest/gtest.h>

#include <sys/stat.h>

#include <fstream>
#include <vector>

namespace ferry {
namespace {

const std::string op_token = "op-0123456789abcdef0123456789abcdef";
const std::string view_token = "view-0123456789abcdef0123456789abcd";

api_tokens tokens() {
  auto t = api_tokens::parse("# role name token\noperator alice " + op_token +
                               "\n\nviewer grafana " + view_token + "  # dashboards\n",
                             "tokens");
  EXPECT_TRUE(t) << describe(t.error());
  return *t;
}

TEST(api_auth, roles_decide_what_a_caller_may_do) {
  const auto t = tokens();
  const auto op = t.caller("Bearer " + op_token);
  ASSERT_TRUE(op);
  EXPECT_EQ(op->name, "alice");
  EXPECT_FALSE(authorize(op, "POST"));
  const auto viewer = t.caller("Bearer " + view_token);
  ASSERT_TRUE(viewer);
  EXPECT_FALSE(authorize(viewer, "GET"));
  const auto no = authorize(viewer, "POST");
  ASSERT_TRUE(no);
  EXPECT_EQ(no->status, 403U);
  EXPECT_NE(no->body.find("grafana is a viewer"), std::string::npos) << no->body;
  for (const std::string& h :
       std::vector<std::string>{"", "Bearer", "Bearer ", "Basic " + op_token, "bearer " + op_token,
                                "Bearer " + op_token + "x", "Bearer " + op_token.substr(1)}) {
    EXPECT_FALSE(t.caller(h)) << h;
    const auto r = authorize(t.caller(h), "GET");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 401U);
  }
}

// Client certificates name their role in OU: operators and viewers are
// callers; a host's certificate (or garbage) names nobody. A request that
// sends a token is judged by the token, whatever certificate it comes with.
TEST(api_auth, client_certificates_name_operators_and_viewers_only) {
  test::temp_dir dir;
  auto r =
    test::run({"/bin/bash", std::string{FERRY_SOURCE_DIR} + "/deploy/pki/ferry-pki.sh", "cluster",
               dir.file("pki"), "--host", "host-a", "--operator", "alice", "--viewer", "bob"});
  ASSERT_EQ(r.status, 0) << r.output;
  const auto op_cert = test::read_file(dir.file("pki/operator-alice-cert.pem"));
  const auto op = certificate_caller(op_cert);
  ASSERT_TRUE(op);
  EXPECT_EQ(op->role, api_role::operator_);
  EXPECT_EQ(op->name, "alice");
  EXPECT_FALSE(authorize(op, "POST"));
  const auto viewer = certificate_caller(test::read_file(dir.file("pki/viewer-bob-cert.pem")));
  ASSERT_TRUE(viewer);
  EXPECT_EQ(viewer->role, api_role::viewer);
  const auto no = authorize(viewer, "POST");
  ASSERT_TRUE(no);
  EXPECT_EQ(no->status, 403U);
  EXPECT_NE(no->body.find("bob is a viewer"), std::string::npos) << no->body;
  EXPECT_FALSE(certificate_caller(test::read_file(dir.file("pki/host-a-cert.pem"))));
  EXPECT_FALSE(certificate_caller(test::read_file(dir.file("pki/orchestrator-cert.pem"))));
  EXPECT_FALSE(certificate_caller("-----BEGIN CERTIFICATE-----\ngarbage\n"));
  EXPECT_FALSE(certificate_caller(""));
  const auto t = tokens();
  EXPECT_EQ(request_caller(t, "", op_cert)->name, "alice");
  EXPECT_EQ(request_caller(t, "Bearer " + view_token, op_cert)->role, api_role::viewer);
  EXPECT_FALSE(request_caller(t, "Bearer wrong", op_cert)) << "a bad token is not rescued";
  EXPECT_FALSE(request_caller(api_tokens{}, "Bearer " + op_token, ""));
}

TEST(api_auth, the_tokens_file_refuses_mistakes) {
  auto why = [](const std::string& text) {
    auto t = api_tokens::parse(text, "tokens");
    return t ? std::string{} : describe(t.error());
  };
  EXPECT_NE(why("admin root " + op_token).find("tokens:1: role 'admin'"), std::string::npos);
  EXPECT_NE(why("\noperator alice short").find("tokens:2: token shorter than 32"),
            std::string::npos);
  EXPECT_NE(why("operator alice").find("expected ROLE NAME TOKEN"), std::string::npos);
  EXPECT_NE(why("operator a " + op_token + " extra").find("expected ROLE NAME TOKEN"),
            std::string::npos);
  EXPECT_NE(why("operator a " + op_token + "\nviewer b " + op_token).find("given twice"),
            std::string::npos);
  EXPECT_NE(why("# nothing\n").find("no tokens"), std::string::npos);
  test::temp_dir dir;
  const std::string path = dir.file("tokens");
  std::ofstream{path} << "operator alice " << op_token << "\n";
  ::chmod(path.c_str(), 0644);
  auto open = api_tokens::load(path);
  ASSERT_FALSE(open);
  EXPECT_NE(describe(open.error()).find("may be read by others"), std::string::npos);
  ::chmod(path.c_str(), 0600);
  EXPECT_TRUE(api_tokens::load(path));
}

} // namespace
} // namespace ferry
