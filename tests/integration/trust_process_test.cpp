// Least privilege in the control plane, on real processes (issue 16): who may
// open a control session to an agent, what an agent relays, which peer the
// orchestrator accepts as a host, and where a guest's files may be.

#include "actors/control_node.hpp"
#include "actors/host_interface.hpp"
#include "tests/support/cluster_fixture.hpp"
#include "tests/support/process.hpp"
#include "tools/qmp/qmp_client.hpp"

#include <caf/all.hpp>
#include <caf/openssl/all.hpp>

#include <boost/json.hpp>
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <thread>

namespace ferry::test {
namespace {

namespace json = boost::json;
using namespace std::chrono_literals;

class trust : public cluster {
protected:
  tls_identity identity(const std::string& who) const {
    return {c.dir.file(who == "orchestrator" ? "pki/hosts-ca.pem" : "pki/orchestrator-ca.pem"),
            c.dir.file("pki/" + who + "-cert.pem"), c.dir.file("pki/" + who + "-key.pem")};
  }
  uint16_t control_port(const std::string& host) const {
    return static_cast<uint16_t>(std::stoi(read_file(run_dir(host) + "/control.port")));
  }
};

// A control session to host-a's agent, opened as `who`: the host actor, or
// the error CAF reports.
caf::expected<host_actor> dial(caf::actor_system& sys, const std::string& host, uint16_t port) {
  return caf::openssl::remote_actor<host_actor>(sys, host, port);
}

std::string replace_all(std::string s, const std::string& from, const std::string& to) {
  for (auto at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size()))
    s.replace(at, from.size(), to);
  return s;
}

// One HTTP/1.1 request by hand (so the status line and headers can be
// checked): everything the server answered until it closed.
std::string raw_http(uint16_t port, const std::string& method, const std::string& path,
                     const std::string& token = {}, const std::string& body = {}) {
  const int fd = connect_loopback(port);
  if (fd < 0)
    return "<refused>";
  std::string req = method + " " + path + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n";
  if (!token.empty())
    req += "Authorization: Bearer " + token + "\r\n";
  req += "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
  (void) ::send(fd, req.data(), req.size(), MSG_NOSIGNAL);
  std::string out;
  char b[4096];
  for (ssize_t n; (n = ::read(fd, b, sizeof b)) > 0;)
    out.append(b, static_cast<size_t>(n));
  ::close(fd);
  return out;
}

TEST_F(trust, only_the_orchestrator_opens_a_session_and_the_relay_refuses_paths_and_programs) {
  create("vm1", "host-a");
  wait_ready("vm1", "host-a");
  const std::string a = c.address("host-a");
  const uint16_t port = control_port("host-a");
  // Another host's certificate, and host-a's own: both from the hosts' CA,
  // which host-a's agent does not trust for control sessions.
  for (const std::string who : {"host-b", "host-a"}) {
    caf::actor_system_config cfg;
    configure_control_plane(cfg, identity(who));
    caf::actor_system sys{cfg};
    auto h = dial(sys, a, port);
    EXPECT_FALSE(h) << who << "'s certificate opened a control session to host-a";
  }
  // The orchestrator's identity gets in; the relay passes what migrations
  // need and refuses the rest, with the reason.
  caf::actor_system_config cfg;
  configure_control_plane(cfg, identity("orchestrator"));
  caf::actor_system sys{cfg};
  auto h = dial(sys, a, port);
  ASSERT_TRUE(h) << sys.render(h.error());
  caf::scoped_actor self{sys};
  auto ask = [&](const std::string& command, const std::string& args) {
    std::string out;
    self->request(*h, 10s, qmp_atom::value, std::string{"vm1"}, command, args)
      .receive([&](const std::string& reply) { out = reply; },
               [&](const caf::error& e) { out = "error: " + sys.render(e); });
    return out;
  };
  EXPECT_NE(ask("query-status", "").find("\"return\""), std::string::npos);
  const std::string marker = c.dir.file("pwned");
  for (const auto& [command, args] : std::vector<std::pair<std::string, std::string>>{
         {"migrate", R"({"uri":"exec:touch )" + marker + R"("})"},
         {"migrate", R"({"uri":"file:)" + marker + R"("})"},
         {"pmemsave", R"({"val":0,"size":4096,"filename":")" + marker + R"("})"},
         {"human-monitor-command", R"({"command-line":"info status"})"}}) {
    const auto reply = ask(command, args);
    EXPECT_NE(reply.find("\"GenericError\""), std::string::npos) << command << ": " << reply;
    EXPECT_NE(reply.find("not relayed"), std::string::npos) << command << ": " << reply;
  }
  std::this_thread::sleep_for(200ms);
  EXPECT_FALSE(std::ifstream{marker}.good()) << "nothing ran, nothing was written";
  EXPECT_NE(ask("query-status", "").find("\"running\""), std::string::npos)
    << "the guest runs on, untouched";
}

// The orchestrator dials host-a at host-b's address: TLS succeeds (the hosts'
// CA issued host-b's certificate) but host-b cannot prove it is host-a.
TEST_F(trust, a_peer_with_another_hosts_certificate_is_refused) {
  c.orchestrator->signal(SIGTERM);
  ASSERT_TRUE(c.orchestrator->wait(10s));
  const std::string conf_path = c.dir.file("orchestrator.toml");
  std::string conf = read_file(conf_path);
  const std::string b_at = c.address("host-b") + ":" + std::to_string(control_port("host-b"));
  const std::string a_entry = "name = \"host-a\"\naddress = \"";
  const auto at = conf.find(a_entry);
  ASSERT_NE(at, std::string::npos) << conf;
  const auto from = at + a_entry.size();
  conf.replace(from, conf.find('"', from) - from, b_at);
  std::ofstream{conf_path} << conf;
  c.orchestrator = std::make_unique<process>(
    std::vector<std::string>{binary("orchestrator/ferry-orchestrator"), "--config", conf_path});
  std::string refusal;
  bool b_up = false;
  for (int i = 0; i < 100 && (refusal.empty() || !b_up); ++i) {
    std::this_thread::sleep_for(100ms);
    auto r = ctl({"hosts", "-o", "json"});
    if (r.status != 0)
      continue;
    const auto hosts = json::parse(r.output);
    for (const auto& h : hosts.as_array()) {
      if (h.at("name").as_string() == "host-a") {
        EXPECT_FALSE(h.at("up").as_bool()) << "host-b passed for host-a";
        refusal = std::string{h.at("refusal").as_string()};
      }
      if (h.at("name").as_string() == "host-b")
        b_up = h.at("up").as_bool();
    }
  }
  EXPECT_NE(refusal.find("its certificate names host 'host-b', not host 'host-a'"),
            std::string::npos)
    << refusal << c.orchestrator->stderr_text();
  EXPECT_TRUE(b_up) << "host-b itself is accepted as host-b";
  EXPECT_NE(c.orchestrator->stderr_text().find("refusing the peer at " + b_at + " as host host-a"),
            std::string::npos)
    << c.orchestrator->stderr_text();
}

// Cluster migrations run TLS by default: the target's port took the source
// over tls-creds with tls-authz naming the source host, the source checked
// the target's name (tls-hostname); the guest arrives intact.
TEST_F(trust, a_cluster_migration_runs_tls_admitting_only_the_source_host) {
  create("vm1", "host-a");
  wait_ready("vm1", "host-a");
  auto m = ctl({"migrate", "vm1", "--to", "host-b", "--wait", "-o", "json"});
  ASSERT_EQ(m.status, 0) << m.output << c.story();
  qmp_tool::qmp_client q{run_dir("host-b") + "/vm1.qmp"};
  q.negotiate();
  const auto params = q.execute("query-migrate-parameters").at("return");
  EXPECT_EQ(params.at("tls-creds").as_string(), "ferry-tls-in") << json::serialize(params);
  EXPECT_EQ(params.at("tls-authz").as_string(), "ferry-authz") << json::serialize(params);
  EXPECT_EQ(q.execute("query-migrate").at("return").at("status").as_string(), "completed");
  // The record the agent keeps names the one peer the port admitted.
  const auto record = json::parse(read_file(run_dir("host-b") + "/vm1.guest"));
  EXPECT_EQ(record.at("migration_peer").as_string(), "host-a");
  verify_guest("vm1", "host-b");
}

TEST_F(trust, a_guest_whose_files_are_outside_the_allowed_directories_is_refused) {
  auto r = ctl({"create", "vm1", "--host", "host-a", "--memory", "8M", "--image", "/etc/passwd",
                "--accel", "none"});
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("drive '/etc/passwd' is outside the directories this agent allows "
                          "(paths.images: " +
                          c.dir.path() + ")"),
            std::string::npos)
    << r.output;
  // A symlink inside the allowed directory that points out is followed.
  const std::string link = c.dir.file("sneaky.img");
  ASSERT_EQ(::symlink("/etc/passwd", link.c_str()), 0);
  r = ctl(
    {"create", "vm2", "--host", "host-a", "--memory", "8M", "--image", link, "--accel", "none"});
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("resolves to '/etc/passwd'"), std::string::npos) << r.output;
  EXPECT_TRUE(placements().empty());
}

// The API needs a token: none (or a wrong one) is 401 with a JSON error, a
// viewer reads but its POST is 403, an operator changes the cluster.
TEST_F(trust, the_api_admits_viewers_to_read_and_operators_to_change) {
  const std::string evacuate_c = R"({"host":"host-c"})";
  const auto raw = [this, &evacuate_c](const std::string& method, const std::string& path,
                                       const std::string& token) {
    return raw_http(c.api_port, method, path, token, method == "POST" ? evacuate_c : "");
  };
  auto r = raw("GET", "/api/v1/hosts", "");
  EXPECT_EQ(r.rfind("HTTP/1.1 401", 0), 0U) << r;
  EXPECT_NE(r.find("WWW-Authenticate: Bearer"), std::string::npos) << r;
  EXPECT_NE(r.find(R"({"error":"authentication required)"), std::string::npos) << r;
  r = raw("GET", "/metrics", "not-a-token-not-a-token-not-a-token");
  EXPECT_EQ(r.rfind("HTTP/1.1 401", 0), 0U) << r;
  r = raw("GET", "/api/v1/hosts", c.viewer_token);
  EXPECT_EQ(r.rfind("HTTP/1.1 200", 0), 0U) << r;
  EXPECT_NE(r.find("host-a"), std::string::npos) << r;
  r = raw("POST", "/api/v1/evacuations", c.viewer_token);
  EXPECT_EQ(r.rfind("HTTP/1.1 403", 0), 0U) << r;
  EXPECT_NE(r.find("test-viewer is a viewer"), std::string::npos) << r;
  r = raw("POST", "/api/v1/evacuations", c.operator_token);
  EXPECT_EQ(r.rfind("HTTP/1.1 200", 0), 0U) << r;
  const auto hosts = json::parse(ctl({"hosts", "-o", "json"}).output);
  for (const auto& h : hosts.as_array())
    if (h.at("name").as_string() == "host-c") {
      EXPECT_TRUE(h.at("draining").as_bool()) << "the operator's evacuation took effect";
    }
  // ferryctl without a token says what is missing.
  auto no_token =
    run({binary("tools/ferryctl"), "--server", "127.0.0.1:" + std::to_string(c.api_port), "hosts"});
  EXPECT_NE(no_token.status, 0);
  EXPECT_NE(no_token.output.find("authentication required"), std::string::npos) << no_token.output;
}

// HTTPS with the cluster PKI: the orchestrator serves its own certificate,
// operators and viewers log in with certificates the clients' CA issued (the
// role is the certificate's), tokens still work over HTTPS, and neither
// plaintext nor a host's certificate gets an answer.
TEST_F(trust, the_api_over_https_takes_client_certificates_by_role) {
  const std::string pki = c.dir.file("pki");
  auto issued = run({"/bin/bash", std::string{FERRY_SOURCE_DIR} + "/deploy/pki/ferry-pki.sh",
                     "cluster", pki, "--operator", "alice", "--viewer", "bob"});
  ASSERT_EQ(issued.status, 0) << issued.output;
  c.orchestrator->signal(SIGTERM);
  ASSERT_TRUE(c.orchestrator->wait(10s));
  std::string conf = read_file(c.dir.file("orchestrator.toml"));
  conf.replace(conf.find("[http]\n"), 7,
               "[http]\ncert = \"" + pki + "/orchestrator-cert.pem\"\nkey = \"" + pki +
                 "/orchestrator-key.pem\"\nclient_ca = \"" + pki + "/clients-ca.pem\"\n");
  std::ofstream{c.dir.file("orchestrator.toml")} << conf;
  c.ctl_options = {"--ca", pki + "/orchestrator-ca.pem"};
  ASSERT_EQ(c.start_orchestrator(), "") << "an operator's token over HTTPS";
  const auto as = [&](const std::string& who, std::vector<std::string> args) {
    std::vector<std::string> argv{binary("tools/ferryctl"), "--server",
                                  "127.0.0.1:" + std::to_string(c.api_port), "--ca",
                                  pki + "/orchestrator-ca.pem"};
    if (!who.empty())
      argv.insert(argv.end(),
                  {"--cert", pki + "/" + who + "-cert.pem", "--key", pki + "/" + who + "-key.pem"});
    argv.insert(argv.end(), args.begin(), args.end());
    return run(argv);
  };
  auto r = as("", {"hosts"});
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("authentication required"), std::string::npos) << r.output;
  r = as("viewer-bob", {"hosts", "-o", "json"});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("host-a"), std::string::npos) << r.output;
  r = as("viewer-bob", {"evacuate", "host-c"});
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("bob is a viewer"), std::string::npos) << r.output;
  r = as("operator-alice", {"evacuate", "host-c"});
  EXPECT_EQ(r.status, 0) << r.output;
  r = as("host-a", {"hosts"});
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("unknown ca"), std::string::npos) << r.output;
  r = run({binary("tools/ferryctl"), "--server", "127.0.0.1:" + std::to_string(c.api_port), "--ca",
           pki + "/hosts-ca.pem", "--token-file", c.operator_token_file(), "hosts"});
  EXPECT_NE(r.status, 0) << "a server the client's CA did not issue is refused: " << r.output;
  const auto plain = raw_http(c.api_port, "GET", "/api/v1/hosts", c.operator_token);
  EXPECT_EQ(plain.find("HTTP/1.1"), std::string::npos) << plain;
  const auto hosts = json::parse(c.ctl({"hosts", "-o", "json"}).output);
  for (const auto& h : hosts.as_array())
    if (h.at("name").as_string() == "host-c") {
      EXPECT_TRUE(h.at("draining").as_bool()) << "the operator's evacuation took effect";
    }
}

// [metrics] listen: GET /metrics alone, without a token; nothing else there.
TEST_F(trust, metrics_have_a_read_only_listener_of_their_own) {
  // A free port, taken back from a socket bound to port 0.
  uint16_t port = 0;
  {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    socklen_t len = sizeof a;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
    port = ntohs(a.sin_port);
    ::close(fd);
  }
  c.orchestrator->signal(SIGTERM);
  ASSERT_TRUE(c.orchestrator->wait(10s));
  std::ofstream{c.dir.file("orchestrator.toml"), std::ios::app}
    << "[metrics]\nlisten = \"127.0.0.1:" << port << "\"\n";
  ASSERT_EQ(c.start_orchestrator(), "");
  auto r = raw_http(port, "GET", "/metrics");
  EXPECT_EQ(r.rfind("HTTP/1.1 200", 0), 0U) << r;
  EXPECT_NE(r.find("ferry_orchestrator_host_up{host=\"host-a\"} 1"), std::string::npos) << r;
  r = raw_http(port, "POST", "/api/v1/evacuations");
  EXPECT_EQ(r.rfind("HTTP/1.1 404", 0), 0U) << "no API on the metrics listener: " << r;
  r = raw_http(c.api_port, "GET", "/metrics");
  EXPECT_EQ(r.rfind("HTTP/1.1 401", 0), 0U) << "the API's own /metrics still needs a token";
}

// The orchestrator's API under a flood (issue 16 item 4): 500 connections
// that send half a request and stall, on top of 100 that trickle a byte a
// second. The daemon stays up, serves ferryctl within a second while the
// trickling ones still hang on, and cuts them all at its request deadline.
TEST_F(trust, the_api_survives_a_connection_flood_and_slow_clients) {
  const auto connect_api = [this] { return connect_loopback(c.api_port); };
  std::vector<int> slow;
  for (int i = 0; i < 100; ++i)
    if (const int fd = connect_api(); fd >= 0)
      slow.push_back(fd);
  std::atomic<bool> trickling{true};
  std::thread trickle{[&] {
    const std::string req = "GET /api/v1/hosts HTTP/1.1\r\nHost: x\r\n";
    for (size_t i = 0; trickling && i < req.size(); ++i) {
      for (int fd : slow)
        (void) ::send(fd, &req[i], 1, MSG_NOSIGNAL);
      std::this_thread::sleep_for(std::chrono::seconds(1));
    }
  }};
  std::vector<int> flood;
  for (int i = 0; i < 500; ++i)
    if (const int fd = connect_api(); fd >= 0) {
      (void) ::send(fd, "POST /api/v1/evacuations HTTP/1.1\r\n", 36, MSG_NOSIGNAL);
      flood.push_back(fd);
    }
  for (int fd : flood)
    ::close(fd);
  // "Afterwards": the flood is over; the server may still be closing its
  // half of those connections (they count against its cap until then).
  const auto t0 = std::chrono::steady_clock::now();
  run_result r;
  do {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    r = ctl({"hosts", "-o", "json"});
  } while (r.status != 0 && std::chrono::steady_clock::now() - t0 < std::chrono::seconds(2));
  const auto took = std::chrono::steady_clock::now() - t0;
  trickling = false;
  trickle.join();
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_LT(took, std::chrono::seconds(1)) << "served while 100 slow clients hang on";
  EXPECT_TRUE(c.orchestrator->running());
  // The trickling clients are cut at the request deadline (10 s).
  size_t cut = 0;
  for (int fd : slow) {
    pollfd p{fd, POLLIN, 0};
    char b[64];
    if (::poll(&p, 1, 12'000) > 0 && ::read(fd, b, sizeof b) <= 0)
      ++cut;
    ::close(fd);
  }
  EXPECT_EQ(cut, slow.size());
}

// A daemon refuses to start with an identity that is not its own.
TEST_F(trust, daemons_refuse_to_start_with_the_wrong_identity) {
  const std::string conf = c.dir.file("host-a.toml");
  std::string text = read_file(conf);
  const std::string wrong = replace_all(text, "pki/host-a-", "pki/host-b-");
  std::ofstream{c.dir.file("wrong.toml")} << wrong;
  auto r = run({binary("agent/ferry-agent"), "--config", c.dir.file("wrong.toml")});
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("names host 'host-b', but this agent is host 'host-a'"),
            std::string::npos)
    << r.output;
  const std::string orch =
    replace_all(read_file(c.dir.file("orchestrator.toml")), "pki/orchestrator-", "pki/host-a-");
  std::ofstream{c.dir.file("wrong-orch.toml")} << orch;
  r = run({binary("orchestrator/ferry-orchestrator"), "--config", c.dir.file("wrong-orch.toml")});
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("is not a orchestrator certificate"), std::string::npos) << r.output;
}

} // namespace
} // namespace ferry::test
