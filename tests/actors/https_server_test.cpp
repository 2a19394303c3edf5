// The HTTP server with TLS: it speaks only HTTPS, hands the handler the
// client certificate it verified, refuses certificates of any other CA and
// plaintext clients without disturbing service, and cuts a client that
// stalls in the handshake at the request deadline.

#include "actors/http_server.hpp"
#include "actors/identity_proof.hpp"
#include "common/error.hpp"
#include "tests/support/process.hpp"
#include "tests/support/temp_dir.hpp"
#include "tools/ferryctl/http_client.hpp"

#include <gtest/gtest.h>

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <mutex>
#include <string>
#include <thread>

namespace ferry {
namespace {

using namespace std::chrono_literals;

struct https_fixture : ::testing::Test {
  test::temp_dir dir;
  http_limits limits;
  std::unique_ptr<http_server> server;
  std::mutex m;
  std::string last_cert; // what the handler was given

  std::string pki(const std::string& file) { return dir.file("pki/" + file); }

  void SetUp() override {
    auto r =
      test::run({"/bin/bash", std::string{FERRY_SOURCE_DIR} + "/deploy/pki/ferry-pki.sh", "cluster",
                 dir.file("pki"), "--host", "host-a", "--operator", "alice", "--viewer", "bob"});
    ASSERT_EQ(r.status, 0) << r.output;
  }

  void start(http_server::handler h = {}) {
    if (!h)
      h = [this](const http_request& req) {
        std::lock_guard lk{m};
        last_cert = req.client_cert;
        return http_response{200, "text/plain", req.method + " " + req.target, {}};
      };
    auto s = http_server::start(
      {"127.0.0.1", 0}, std::move(h), "test-https", "test-w", limits,
      http_tls{pki("orchestrator-cert.pem"), pki("orchestrator-key.pem"), pki("clients-ca.pem")});
    ASSERT_TRUE(s) << describe(s.error());
    server = std::move(*s);
  }

  ctl::http_result get(const ctl::client_tls& tls) {
    return ctl::http_request({"127.0.0.1", server->port()}, "GET", "/x", {}, {}, tls);
  }
  ctl::client_tls as(const std::string& prefix) {
    return {pki("orchestrator-ca.pem"), pki(prefix + "-cert.pem"), pki(prefix + "-key.pem")};
  }
};

TEST_F(https_fixture, serves_over_tls_and_hands_the_verified_client_certificate_to_the_handler) {
  start();
  auto r = get(as("operator-alice"));
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.body, "GET /x");
  {
    std::lock_guard lk{m};
    auto who = identity::subject_of(last_cert);
    ASSERT_TRUE(who) << last_cert;
    EXPECT_EQ(who->role, "operator");
    EXPECT_EQ(who->name, "alice");
  }
  r = get(ctl::client_tls{pki("orchestrator-ca.pem")});
  ASSERT_EQ(r.status, 200) << "no certificate is allowed (a token may follow): " << r.body;
  std::lock_guard lk{m};
  EXPECT_EQ(last_cert, "") << "and the handler is told there was none";
}

TEST_F(https_fixture, other_certificates_and_plaintext_are_refused_and_service_goes_on) {
  start();
  // A host's certificate is from another CA: the server refuses it (with
  // TLS 1.3 the client hears so at its first read).
  auto r = get(as("host-a"));
  EXPECT_EQ(r.status, 0) << r.body;
  EXPECT_NE(r.body.find("unknown ca"), std::string::npos) << r.body;
  // The client checks the server too: trusting only the hosts' CA, or
  // expecting another name, it refuses the orchestrator's certificate.
  r = get(ctl::client_tls{pki("hosts-ca.pem")});
  EXPECT_EQ(r.status, 0) << r.body;
  auto wrong_name = as("operator-alice");
  wrong_name.server_name = "host-a";
  r = get(wrong_name);
  EXPECT_EQ(r.status, 0) << r.body;
  // Plain HTTP gets no HTTP answer.
  r = ctl::http_request({"127.0.0.1", server->port()}, "GET", "/x");
  EXPECT_EQ(r.status, 0) << r.body;
  {
    std::lock_guard lk{m};
    EXPECT_EQ(last_cert, "") << "no handler ran";
  }
  r = get(as("viewer-bob"));
  EXPECT_EQ(r.status, 200) << r.body;
}

// TLS files that do not load, or a key that is not the certificate's: no
// server, and the error names the file.
TEST_F(https_fixture, tls_files_that_do_not_load_are_an_error_naming_them) {
  const auto refused = [&](const http_tls& tls, const std::string& needle) {
    auto s = http_server::start(
      {"127.0.0.1", 0}, [](const http_request&) { return http_response{}; }, "test-https", "test-w",
      limits, tls);
    ASSERT_FALSE(s) << needle;
    EXPECT_NE(describe(s.error()).find(needle), std::string::npos) << describe(s.error());
  };
  const std::string cert = pki("orchestrator-cert.pem");
  const std::string key = pki("orchestrator-key.pem");
  refused({dir.file("missing.pem"), key, {}}, "missing.pem");
  refused({cert, pki("host-a-key.pem"), {}}, "does not match the certificate");
  refused({cert, key, dir.file("no-ca.pem")}, "client CA '" + dir.file("no-ca.pem"));
}

TEST_F(https_fixture, a_client_that_stalls_in_the_handshake_is_cut_at_the_deadline) {
  limits.request_timeout = 1000ms;
  start();
  const int fd = test::connect_loopback(server->port());
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::send(fd, "\x16\x03\x01", 3, MSG_NOSIGNAL), 3); // a ClientHello's first bytes
  const auto t0 = std::chrono::steady_clock::now();
  pollfd p{fd, POLLIN, 0};
  ASSERT_EQ(::poll(&p, 1, 5000), 1) << "the server closes it";
  char buf[64];
  EXPECT_LE(::read(fd, buf, sizeof buf), 0);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 3s);
  ::close(fd);
  EXPECT_EQ(get(as("operator-alice")).status, 200);
}

TEST_F(https_fixture, an_event_stream_flows_over_tls_and_ends_with_a_clean_close) {
  start([](const http_request&) {
    http_response r;
    r.content_type = "text/event-stream";
    r.stream = [](const http_stream_writer& w, const std::atomic<bool>&) {
      for (int i = 0; i < 3 && w("data: tick " + std::to_string(i) + "\n\n"); ++i)
        std::this_thread::sleep_for(20ms);
    };
    return r;
  });
  auto r = get(as("viewer-bob"));
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.body, "data: tick 0\n\ndata: tick 1\n\ndata: tick 2\n\n");
}

} // namespace
} // namespace ferry
