// Live migration between two ferry-agent processes, driven over QMP as a
// management tool drives QEMU: a test guest pre-filled with its pattern runs
// on the source (KVM where usable, else the -accel none dirtier playing it), the destination waits
// with -incoming defer, and after the migration ferry-verify proves the destination's memory
// consistent while its serial port shows the guest still counting there.

#include "agent/transport/migration_address.hpp"
#include "agent/transport/migration_channel.hpp"
#include "common/error.hpp"
#include "protocol/migration_stream.hpp"
#include "tests/integration/migration_fixture.hpp"
#include "tests/support/huge_pages.hpp"
#include "tests/support/kvm_skip.hpp"
#include "tests/support/process.hpp"
#include "tests/support/wait_status.hpp"
#include "tools/qmp/qmp_client.hpp"

#include <boost/json.hpp>
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <thread>
#include <vector>

using namespace ferry::test;

namespace {

struct live_case {
  const char* transport;
  uint32_t channels;             // 0 = without multifd
  const char* compress = "none"; // multifd-compression
  bool tls = false;              // tls-creds-x509 from the command line
};

struct live_migration : migration_fixture, ::testing::WithParamInterface<live_case> {};

} // namespace

TEST_P(live_migration, running_guest_arrives_intact_and_runs_on) {
  start_pair("2048", GetParam().tls);
  // Compression runs at tens of MB/s per channel on this data (zlib most
  // slowly) and CI runs tests side by side: a downtime-limit the working set
  // fits in at such rates keeps the test about correctness, not speed.
  json::object params{{"max-bandwidth", 1ull << 30}};
  if (std::string{GetParam().compress} != "none")
    params["downtime-limit"] = 1000;
  configure(GetParam().channels, params);
  if (std::string{GetParam().compress} != "none") {
    for (host* h : {&src, &dst})
      EXPECT_TRUE(h->exec("migrate-set-parameters", {{"multifd-compression", GetParam().compress}})
                    .as_object()
                    .contains("return"));
  }
  const std::string uri = listen(GetParam().transport);
  auto r = src.exec("migrate", {{"uri", uri}});
  ASSERT_TRUE(r.as_object().contains("return")) << json::serialize(r);
  ASSERT_EQ(src.wait_status({"completed", "failed"}, 60s), "completed")
    << json::serialize(src.info());
  ASSERT_EQ(dst.wait_status({"completed", "failed"}, 10s), "completed")
    << json::serialize(dst.info()) << dst.agent->stderr_text();

  const auto info = src.info();
  std::printf("%s, %u channel(s): %s\n", GetParam().transport, GetParam().channels,
              json::serialize(info).c_str());
  const auto& stats = info.at("ram").as_object();
  EXPECT_EQ(stats.at("total").to_number<uint64_t>(), bytes);
  EXPECT_EQ(stats.at("remaining").to_number<uint64_t>(), 0U);
  EXPECT_GE(stats.at("normal").to_number<uint64_t>() + stats.at("duplicate").to_number<uint64_t>(),
            bytes / 4096)
    << "every page went at least once";
  EXPECT_GE(stats.at("normal").to_number<uint64_t>(), bytes / 4096 * 3 / 4)
    << "the pattern's pages went with their data";
  EXPECT_GE(stats.at("dirty-sync-count").to_number<uint64_t>(), 2U);
  EXPECT_EQ(stats.at("multifd-bytes").to_number<uint64_t>() > 0, GetParam().channels > 0);
  EXPECT_TRUE(info.contains("downtime"));
  EXPECT_EQ(src.exec("query-status").at("return").at("status"), "postmigrate");
  expect_destination_runs_on("65280");
}

INSTANTIATE_TEST_SUITE_P(
  transports, live_migration,
  ::testing::Values(live_case{"tcp", 0}, live_case{"tcp", 4}, live_case{"unix", 0},
                    live_case{"unix", 4}, live_case{"tcp", 2, "zstd"}, live_case{"unix", 2, "zlib"},
                    live_case{"tcp", 4, "none", true}, live_case{"tcp", 2, "zstd", true}),
  [](const auto& p) {
    std::string name = std::string{p.param.transport} + "_" +
                       (p.param.channels == 0 ? std::string{"single_stream"}
                                              : std::to_string(p.param.channels) + "_channels");
    if (std::string{p.param.compress} != "none")
      name += std::string{"_"} + p.param.compress;
    if (p.param.tls)
      name += "_tls";
    return name;
  });

// A destination with TLS and tls-authz admits only its source: a plaintext
// client and a client whose certificate (from the same CA) names someone else
// are each dropped, the port keeps waiting with the guest undisturbed, and
// the real source then migrates and verifies.
TEST_F(migration_fixture, a_tls_port_drops_plaintext_and_unauthorised_peers_then_takes_the_source) {
  size = "64M";
  bytes = 64u << 20;
  start_pair("2048", true);
  configure(2, {{"max-bandwidth", 1ull << 30}});
  const std::string uri = listen("tcp");
  const auto port = static_cast<uint16_t>(std::stoi(uri.substr(uri.rfind(':') + 1)));

  // A plaintext peer: it speaks first, as a source without TLS would.
  {
    const int fd = connect_loopback(port);
    ASSERT_GE(fd, 0);
    const char hello[] = "FERRY plaintext hello, not a TLS ClientHello";
    ASSERT_GT(::write(fd, hello, sizeof hello), 0);
    timeval tv{5, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char buf[256];
    ssize_t n = 0;
    while ((n = ::read(fd, buf, sizeof buf)) > 0) {
    }
    EXPECT_EQ(n, 0) << "the destination closes the connection (not a 5 s timeout)";
    ::close(fd);
  }
  // A Ferry source whose certificate the same CA issued for someone else.
  const std::string other = dir + "/pki-other";
  const std::string pki_script = FERRY_SOURCE_DIR "/deploy/pki/ferry-pki.sh";
  auto r = run(
    {"/bin/bash", pki_script, other, "--ca", dir + "/pki", "--client-dn", "/O=Ferry/CN=intruder"});
  ASSERT_EQ(r.status, 0) << r.output;
  host bad{"bad", dir + "/bad.sock", dir + "/bad.txt", {}, {}};
  start(bad, {"-object", "tls-creds-x509,id=tls0,dir=" + other + ",endpoint=client"});
  json::array caps{json::object{{"capability", "multifd"}, {"state", true}}};
  EXPECT_TRUE(
    bad.exec("migrate-set-capabilities", {{"capabilities", caps}}).as_object().contains("return"));
  EXPECT_TRUE(bad.exec("migrate-set-parameters", {{"tls-creds", "tls0"}, {"multifd-channels", 2}})
                .as_object()
                .contains("return"));
  r.output = json::serialize(bad.exec("migrate", {{"uri", uri}}));
  EXPECT_EQ(bad.wait_status({"completed", "failed"}, 20s), "failed") << r.output;
  EXPECT_EQ(bad.exec("query-status").at("return").at("status"), "running")
    << "the refused source keeps its guest";

  EXPECT_EQ(dst.status(), "setup") << "the port still waits: " << json::serialize(dst.info());
  EXPECT_EQ(dst.exec("query-status").at("return").at("status"), "inmigrate");
  const std::string log = dst.agent->stderr_text();
  EXPECT_NE(log.find("TLS x509 authz check for CN=intruder,O=Ferry is denied"), std::string::npos)
    << log;

  // The real source.
  r.output = json::serialize(src.exec("migrate", {{"uri", uri}}));
  ASSERT_EQ(src.wait_status({"completed", "failed"}, 60s), "completed")
    << r.output << json::serialize(src.info()) << dst.agent->stderr_text();
  ASSERT_EQ(dst.wait_status({"completed", "failed"}, 10s), "completed");
  expect_destination_runs_on("16128");
}

TEST_F(migration_fixture, hot_guest_keeps_iterating_then_cancel_leaves_the_source_intact) {
  size = "64M";
  bytes = 64u << 20;
  start_pair("2048");
  // 8 MiB of working set rewritten far faster than 64 MiB/s can carry, and
  // a 1 ms downtime-limit: it can never converge.
  configure(2, {{"max-bandwidth", 64u << 20}, {"downtime-limit", 1}});
  const std::string uri = listen("unix");
  ASSERT_TRUE(src.exec("migrate", {{"uri", uri}}).as_object().contains("return"));
  const auto deadline = std::chrono::steady_clock::now() + 60s;
  uint64_t syncs = 0;
  // "remaining" is the current pass's unsent pages (as in QEMU), so one sample
  // can land in the instant between a pass's last page and the next sync;
  // the largest value seen over the passes is what shows work left over.
  uint64_t most_remaining = 0;
  while (syncs < 4 && std::chrono::steady_clock::now() < deadline) {
    const auto i = src.info();
    if (i.contains("ram")) {
      syncs = i.at("ram").at("dirty-sync-count").to_number<uint64_t>();
      if (syncs >= 2)
        most_remaining =
          std::max(most_remaining, i.at("ram").at("remaining").to_number<uint64_t>());
    }
    std::this_thread::sleep_for(50ms);
  }
  const auto info = src.info();
  EXPECT_EQ(info.at("status"), "active") << json::serialize(info);
  EXPECT_GE(syncs, 4U);
  EXPECT_GT(info.at("expected-downtime").to_number<uint64_t>(), 1U);
  EXPECT_GT(most_remaining, 0U) << "later passes still had pages to send";

  EXPECT_TRUE(src.exec("migrate_cancel").as_object().contains("return"));
  EXPECT_EQ(src.wait_status({"cancelled"}, 10s), "cancelled");
  EXPECT_EQ(src.exec("query-status").at("return").at("status"), "running");
  // The destination, with exit-on-error (QEMU's default), gives up and exits.
  EXPECT_EQ(dst.agent->wait(10s), 1);
  EXPECT_NE(dst.agent->stderr_text().find("load of migration failed"), std::string::npos)
    << dst.agent->stderr_text();

  const size_t before = last_pass(read_file(src.serial));
  const auto until = std::chrono::steady_clock::now() + 30s;
  while (last_pass(read_file(src.serial)) <= before && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(20ms);
  EXPECT_GT(last_pass(read_file(src.serial)), before) << "the source guest runs on";
  auto v = dump_and_verify(src);
  EXPECT_EQ(v.status, 0) << v.output;
  EXPECT_NE(v.output.find("(0 bad)"), std::string::npos) << v.output;
}

// Downtime within the limit (issue 15): one running guest migrated back and
// forth, each time verified page by page on arrival and still counting;
// every migration's downtime (the source's figure, QEMU's definition: guest
// stopped until the destination holds it) within downtime-limit, and every
// one carried a matching switchover digest (it completed). Rounds:
// FERRY_SOAK_ROUNDS (default 4; the opt-in `migration_soak` test runs 100,
// cmake -DFERRY_SOAK=ON) — a miss is printed with its round.
TEST_F(migration_fixture, downtime_stays_within_the_limit_over_repeated_migrations) {
  const char* env = std::getenv("FERRY_SOAK_ROUNDS");
  const int rounds = env != nullptr ? std::atoi(env) : 4;
  constexpr uint64_t limit_ms = 300;
  start_pair("2048");
  int misses = 0;
  uint64_t worst = 0;
  for (int round = 1; round <= rounds; ++round) {
    configure(2, {{"max-bandwidth", 1ull << 30}, {"downtime-limit", limit_ms}});
    const std::string uri = listen("unix");
    ASSERT_TRUE(src.exec("migrate", {{"uri", uri}}).as_object().contains("return"));
    ASSERT_EQ(src.wait_status({"completed", "failed"}, 60s), "completed")
      << "round " << round << ": " << json::serialize(src.info());
    ASSERT_EQ(dst.wait_status({"completed", "failed"}, 10s), "completed")
      << "round " << round << ": " << json::serialize(dst.info());
    const auto downtime = src.info().at("downtime").to_number<uint64_t>();
    worst = std::max(worst, downtime);
    if (downtime > limit_ms) {
      ++misses;
      std::printf("round %d: downtime %llu ms over the %llu ms limit\n", round,
                  static_cast<unsigned long long>(downtime),
                  static_cast<unsigned long long>(limit_ms));
    }
    // It runs on over there, from where it was, and verifies page by page.
    const size_t left_at = last_pass(read_file(src.serial));
    const auto deadline = std::chrono::steady_clock::now() + 30s;
    while (last_pass(read_file(dst.serial)) <= left_at &&
           std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(20ms);
    ASSERT_GT(last_pass(read_file(dst.serial)), left_at) << "round " << round;
    auto v = dump_and_verify(dst);
    ASSERT_NE(v.output.find("(0 bad)"), std::string::npos) << "round " << round << ": " << v.output;
    ASSERT_TRUE(dst.exec("cont").as_object().contains("return"));
    // Back the other way: the old source goes, a fresh destination waits
    // where it was.
    src.q.reset();
    src.agent.reset();
    std::swap(src, dst);
    start(dst, {"-incoming", "defer"});
  }
  std::printf("%d migrations: worst downtime %llu ms (limit %llu ms), %d over\n", rounds,
              static_cast<unsigned long long>(worst), static_cast<unsigned long long>(limit_ms),
              misses);
  EXPECT_EQ(misses, 0);
}

// Guest RAM in huge pages (memory-backend-memfd,hugetlb=on): a running
// guest migrates into such RAM and out of it again, verified page by page
// after each hop; postcopy into it is refused at the handshake (pages are
// placed 4 KiB at a time) and leaves the source running and migratable.
TEST_F(migration_fixture, guest_ram_in_huge_pages_migrates_in_and_out) {
  huge_page_reservation reserve{128}; // 256 MiB in 2 MiB pages, one side at a time
  if (!reserve.unavailable_reason().empty())
    GTEST_SKIP() << reserve.unavailable_reason();
  const std::vector<std::string> huge_dst{
    "-incoming", "defer",
    "-object",   "memory-backend-memfd,id=ram0,size=" + size + ",hugetlb=on,hugetlbsize=2M",
    "-machine",  "memory-backend=ram0"};
  start_pair("2048");
  const auto restart_dst = [&](const std::vector<std::string>& args) {
    dst.q.reset();
    dst.agent.reset();
    start(dst, args);
  };
  restart_dst(huge_dst);

  const json::array postcopy{json::object{{"capability", "postcopy-ram"}, {"state", true}}};
  for (host* h : {&src, &dst})
    ASSERT_TRUE(h->exec("migrate-set-capabilities", {{"capabilities", postcopy}})
                  .as_object()
                  .contains("return"));
  ASSERT_TRUE(src.exec("migrate", {{"uri", listen("unix")}}).as_object().contains("return"));
  ASSERT_EQ(src.wait_status({"completed", "failed"}, 30s), "failed");
  const std::string why{src.info().at("error-desc").as_string()};
  EXPECT_NE(why.find("huge pages"), std::string::npos) << why;
  EXPECT_EQ(src.exec("query-status").at("return").at("status"), "running");

  const json::array no_postcopy{json::object{{"capability", "postcopy-ram"}, {"state", false}}};
  ASSERT_TRUE(src.exec("migrate-set-capabilities", {{"capabilities", no_postcopy}})
                .as_object()
                .contains("return"));
  restart_dst(huge_dst);
  configure(2, {{"max-bandwidth", 1ull << 30}, {"downtime-limit", 1000}});
  ASSERT_TRUE(src.exec("migrate", {{"uri", listen("tcp")}}).as_object().contains("return"));
  ASSERT_EQ(src.wait_status({"completed", "failed"}, 60s), "completed")
    << json::serialize(src.info());
  ASSERT_EQ(dst.wait_status({"completed", "failed"}, 10s), "completed")
    << json::serialize(dst.info()) << dst.agent->stderr_text();
  expect_destination_runs_on("65280");
  ASSERT_TRUE(dst.exec("cont").as_object().contains("return"));

  // Out of huge pages into base pages.
  src.q.reset();
  src.agent.reset();
  std::swap(src, dst);
  start(dst, {"-incoming", "defer"});
  configure(2, {{"max-bandwidth", 1ull << 30}, {"downtime-limit", 1000}});
  ASSERT_TRUE(src.exec("migrate", {{"uri", listen("unix")}}).as_object().contains("return"));
  ASSERT_EQ(src.wait_status({"completed", "failed"}, 60s), "completed")
    << json::serialize(src.info());
  ASSERT_EQ(dst.wait_status({"completed", "failed"}, 10s), "completed")
    << json::serialize(dst.info()) << dst.agent->stderr_text();
  expect_destination_runs_on("65280");
}

TEST_F(migration_fixture, destination_killed_mid_migration_fails_the_source_which_runs_on) {
  start_pair();
  configure(4, {{"max-bandwidth", 32u << 20}});
  const std::string uri = listen("tcp");
  ASSERT_TRUE(src.exec("migrate", {{"uri", uri}}).as_object().contains("return"));
  ASSERT_EQ(src.wait_status({"active"}, 10s), "active");
  std::this_thread::sleep_for(500ms);
  dst.agent->signal(SIGKILL);
  EXPECT_EQ(src.wait_status({"failed"}, 10s), "failed");
  const auto info = src.info();
  EXPECT_FALSE(std::string{info.at("error-desc").as_string()}.empty());
  std::printf("error-desc: %s\n", std::string{info.at("error-desc").as_string()}.c_str());
  EXPECT_EQ(src.exec("query-status").at("return").at("status"), "running");
  auto v = dump_and_verify(src);
  EXPECT_EQ(v.status, 0) << v.output;
  EXPECT_NE(v.output.find("consistent: 65280 pattern pages (0 bad)"), std::string::npos)
    << v.output;
}

// Postcopy (issue 18): a guest too hot for precopy to finish (the hot-guest
// test above) moves after migrate-start-postcopy: it runs on the destination
// while the pages it lacks follow, those it touches first asked for on the
// return path; its memory verifies page by page there, and the source's
// stale copy stays stopped.
struct postcopy_case {
  uint32_t channels;
  bool tls;
  bool preempt = false; // postcopy-preempt: requested pages on their own channel
};

class postcopy_fixture : public migration_fixture {
protected:
  // A hot guest migrating with postcopy-ram on both sides, switched to
  // postcopy once precopy is seen iterating; the owed pages then stream at
  // `postcopy_bw` bytes/s. The uri the source used.
  std::string begin_postcopy(uint32_t channels, bool tls, uint64_t postcopy_bw,
                             const std::string& transport = "unix", bool preempt = false,
                             bool release_ram = false) {
    size = "64M";
    bytes = 64u << 20;
    start_pair("2048", tls);
    configure(channels, {{"max-bandwidth", 32u << 20},
                         {"downtime-limit", 1},
                         {"max-postcopy-bandwidth", postcopy_bw}});
    json::array caps{json::object{{"capability", "postcopy-ram"}, {"state", true}}};
    if (preempt)
      caps.push_back(json::object{{"capability", "postcopy-preempt"}, {"state", true}});
    for (host* h : {&src, &dst})
      EXPECT_TRUE(h->exec("migrate-set-capabilities", {{"capabilities", caps}})
                    .as_object()
                    .contains("return"));
    if (release_ram) { // the source's alone
      EXPECT_TRUE(src
                    .exec("migrate-set-capabilities",
                          {{"capabilities", json::array{json::object{{"capability", "release-ram"},
                                                                     {"state", true}}}}})
                    .as_object()
                    .contains("return"));
    }
    // The destination measures how long its vCPUs wait for pages.
    EXPECT_TRUE(
      dst
        .exec("migrate-set-capabilities",
              {{"capabilities",
                json::array{json::object{{"capability", "postcopy-blocktime"}, {"state", true}}}}})
        .as_object()
        .contains("return"));
    std::string uri = listen(tls ? "tcp" : transport);
    EXPECT_TRUE(src.exec("migrate", {{"uri", uri}}).as_object().contains("return"));
    // It iterates (a second pass begins: precopy alone would go on).
    const auto deadline = std::chrono::steady_clock::now() + 60s;
    uint64_t syncs = 0;
    while (syncs < 2 && std::chrono::steady_clock::now() < deadline) {
      const auto i = src.info();
      if (i.contains("ram"))
        syncs = i.at("ram").at("dirty-sync-count").to_number<uint64_t>();
      std::this_thread::sleep_for(20ms);
    }
    EXPECT_GE(syncs, 2U) << json::serialize(src.info());
    EXPECT_EQ(src.info().at("status"), "active");
    auto r = src.exec("migrate-start-postcopy");
    EXPECT_TRUE(r.as_object().contains("return")) << json::serialize(r);
    return uri;
  }

  // Both sides completed; the guest runs on at the destination and its
  // memory verifies; the source's stale copy stays stopped.
  void expect_completed() {
    ASSERT_EQ(src.wait_status({"completed", "failed"}, 60s), "completed")
      << json::serialize(src.info()) << src.agent->stderr_text();
    ASSERT_EQ(dst.wait_status({"completed", "failed"}, 30s), "completed")
      << json::serialize(dst.info()) << dst.agent->stderr_text();
    EXPECT_EQ(src.exec("query-status").at("return").at("status"), "postmigrate");
    expect_destination_runs_on("16128");
  }
};

class postcopy_migration : public postcopy_fixture,
                           public ::testing::WithParamInterface<postcopy_case> {};

TEST_P(postcopy_migration, hot_guest_completes_after_migrate_start_postcopy) {
  // After the switch the owed pages stream at 8 MiB/s: the guest reaches
  // many of them first and has to ask.
  begin_postcopy(GetParam().channels, GetParam().tls, 8u << 20, "unix", GetParam().preempt);
  // Both sides pass through postcopy-active (or are already done).
  EXPECT_NE(dst.wait_status({"postcopy-active", "completed", "failed"}, 30s), "failed")
    << json::serialize(dst.info()) << dst.agent->stderr_text();
  expect_completed();
  const auto info = src.info();
  std::printf("postcopy: %s\n", json::serialize(info).c_str());
  EXPECT_GT(info.at("ram").at("postcopy-bytes").to_number<uint64_t>(), 0U)
    << "pages followed the guest";
  const auto requests = info.at("ram").at("postcopy-requests").to_number<uint64_t>();
  EXPECT_GT(requests, 0U) << "the guest asked for pages it touched";
  EXPECT_EQ(dst.info().at("ram").at("postcopy-requests").to_number<uint64_t>(), requests)
    << "every request the destination sent was served";
  // postcopy-blocktime: one entry per vCPU (the -accel none dirtier plays
  // one); the vCPUs waited for the pages they asked for.
  const auto in = dst.info();
  std::printf("destination: %s\n", json::serialize(in).c_str());
  ASSERT_TRUE(in.contains("postcopy-vcpu-blocktime")) << json::serialize(in);
  const auto& per_vcpu = in.at("postcopy-vcpu-blocktime").as_array();
  EXPECT_EQ(per_vcpu.size(), 1U);
  uint64_t waited = 0;
  for (const auto& ms : per_vcpu)
    waited += ms.to_number<uint64_t>();
  EXPECT_GT(waited, 0U);
  EXPECT_LE(in.at("postcopy-blocktime").to_number<uint64_t>(), waited);
}

INSTANTIATE_TEST_SUITE_P(transports, postcopy_migration,
                         ::testing::Values(postcopy_case{0, false}, postcopy_case{2, false},
                                           postcopy_case{2, true}, postcopy_case{0, false, true},
                                           postcopy_case{2, true, true}),
                         [](const auto& p) {
                           return std::string{p.param.channels == 0 ? "one_channel" : "multifd"} +
                                  (p.param.tls ? "_tls" : "") + (p.param.preempt ? "_preempt" : "");
                         });

// Recovery: the postcopy link breaks — migrate-pause cuts it, or the
// connection is reset under both agents (ss -K, root only) — and both sides
// pause: the guest keeps running on the destination (a thread touching a
// missing page waits), the source's copy stays stopped. migrate-recover on
// the destination and migrate resume=true on the source reconnect in the
// same session, the pages placed meanwhile are reconciled, the rest
// follows, and the guest verifies page by page.
enum class link_break {
  migrate_pause,
  connection_reset,
  migrate_pause_preempt,
  migrate_pause_release_ram
};

std::string break_name(link_break b) {
  switch (b) {
    case link_break::migrate_pause:
      return "migrate_pause";
    case link_break::connection_reset:
      return "connection_reset";
    case link_break::migrate_pause_release_ram:
      return "migrate_pause_release_ram";
    default:
      return "destination_migrate_pause_preempt";
  }
}

class postcopy_recovery : public postcopy_fixture,
                          public ::testing::WithParamInterface<link_break> {};

TEST_P(postcopy_recovery, both_sides_pause_then_recover_and_complete) {
  if (GetParam() == link_break::connection_reset && ::geteuid() != 0)
    GTEST_SKIP() << "resetting the migration's connection (ss -K) needs root";
  // 2 MiB/s: the owed 8 MiB take seconds, the break lands in postcopy.
  const bool preempt = GetParam() == link_break::migrate_pause_preempt;
  // With release-ram the source frees what the destination holds: the
  // recovery owes only pages still here.
  const bool release = GetParam() == link_break::migrate_pause_release_ram;
  const std::string uri = begin_postcopy(0, false, 2u << 20, "tcp", preempt, release);
  ASSERT_EQ(src.wait_status({"postcopy-active", "completed", "failed"}, 30s), "postcopy-active");
  ASSERT_EQ(dst.wait_status({"postcopy-active", "completed", "failed"}, 30s), "postcopy-active");
  std::this_thread::sleep_for(300ms);
  if (GetParam() != link_break::connection_reset) {
    // On the source; the destination's migrate-pause does the same.
    auto r = (preempt ? dst : src).exec("migrate-pause");
    ASSERT_TRUE(r.as_object().contains("return")) << json::serialize(r);
  } else {
    const std::string port = uri.substr(uri.rfind(':') + 1);
    auto r = run({"/bin/sh", "-c", "ss -K dport = :" + port});
    ASSERT_EQ(r.status, 0) << r.output;
  }
  ASSERT_EQ(src.wait_status({"postcopy-paused", "completed", "failed"}, 30s), "postcopy-paused")
    << json::serialize(src.info()) << src.agent->stderr_text();
  ASSERT_EQ(dst.wait_status({"postcopy-paused", "completed", "failed"}, 30s), "postcopy-paused")
    << json::serialize(dst.info()) << dst.agent->stderr_text();
  // Paused, nothing lost: the guest is still the destination's, the
  // source's copy stopped; the destination cannot be cancelled into losing
  // it (the source's cancel abandons a dead destination: the test below).
  EXPECT_EQ(dst.exec("query-status").at("return").at("status"), "running");
  EXPECT_EQ(src.exec("query-status").at("return").at("status"), "finish-migrate");
  EXPECT_TRUE(dst.exec("migrate_cancel").as_object().contains("error"));
  // Resuming before the destination listens again is refused by the
  // destination's state, not taken as a new migration.
  EXPECT_TRUE(dst.exec("migrate-incoming", {{"uri", "unix:" + dir + "/other.sock"}})
                .as_object()
                .contains("error"));
  const std::string again = "unix:" + dir + "/recover.sock";
  auto r = dst.exec("migrate-recover", {{"uri", again}});
  ASSERT_TRUE(r.as_object().contains("return")) << json::serialize(r);
  EXPECT_EQ(dst.status(), "postcopy-recover");
  r = src.exec("migrate", {{"uri", again}, {"resume", true}});
  ASSERT_TRUE(r.as_object().contains("return")) << json::serialize(r);
  expect_completed();
}

// release-ram: once postcopy runs the source frees precopy's pages (the
// destination proved it holds them), then each owed page the destination
// says it placed; its resident guest RAM (anonymous, or shared memory for a
// memfd) falls by most of the guest's 64 MiB while the destination verifies
// page by page.
uint64_t rss_shmem_kib(pid_t pid) {
  const std::string status = read_file("/proc/" + std::to_string(pid) + "/status");
  uint64_t kib = 0;
  for (const char* key : {"RssAnon:", "RssShmem:"}) {
    const auto at = status.find(key);
    if (at != std::string::npos)
      kib += std::strtoull(status.c_str() + at + std::strlen(key), nullptr, 10);
  }
  return kib;
}

TEST_F(postcopy_fixture, release_ram_frees_the_sources_pages_the_destination_holds) {
  begin_postcopy(0, false, 8u << 20, "unix", false, true);
  const auto before = rss_shmem_kib(src.agent->pid());
  expect_completed();
  const auto after = rss_shmem_kib(src.agent->pid());
  std::printf("release-ram: source RSS (anonymous + shared) %llu -> %llu KiB\n",
              static_cast<unsigned long long>(before), static_cast<unsigned long long>(after));
  EXPECT_GE(before, after + (40u << 10)) << "most of the 64 MiB freed";
  const auto err = src.agent->stderr_text();
  EXPECT_NE(err.find("MiB freed on the source"), std::string::npos) << err;
  EXPECT_EQ(err.find("release-ram stops"), std::string::npos) << err;
}

// Only the paused migration's own source may come back: a peer reaching the
// recovery address with another session's resume, or with a fresh
// migration, is refused with the reason; the destination pauses again
// (the guest runs on, nothing placed) and the real source still resumes.
std::string hello_refusal(const std::string& uri, uint32_t flags) {
  auto ch = open_outgoing(std::get<ferry::migration_address>(ferry::parse_migration_uri(uri)));
  if (!ch)
    return "cannot connect: " + ferry::describe(ch.error());
  namespace mig = ferry::mig;
  mig::hello h;
  h.flags = flags;
  h.ram_size = 64u << 20;
  h.session.fill(0x5a); // not the paused migration's
  if (!(*ch)->send(mig::record_type::hello, mig::encode(h)))
    return "cannot send the hello";
  std::vector<uint8_t> buf;
  auto head = (*ch)->receive(buf);
  if (!head || head->type != mig::record_type::hello_ack)
    return "no hello_ack";
  auto ack = mig::decode_status(buf);
  if (!ack || ack->code == 0)
    return "accepted";
  return ack->text;
}

TEST_F(postcopy_fixture, another_sessions_resume_is_refused_and_the_pause_goes_on) {
  begin_postcopy(0, false, 2u << 20);
  ASSERT_EQ(src.wait_status({"postcopy-active", "completed", "failed"}, 30s), "postcopy-active");
  ASSERT_EQ(dst.wait_status({"postcopy-active", "completed", "failed"}, 30s), "postcopy-active");
  ASSERT_TRUE(src.exec("migrate-pause").as_object().contains("return"));
  ASSERT_EQ(dst.wait_status({"postcopy-paused", "completed", "failed"}, 30s), "postcopy-paused");
  ASSERT_EQ(src.wait_status({"postcopy-paused", "completed", "failed"}, 30s), "postcopy-paused");
  namespace mig = ferry::mig;
  int n = 0;
  for (const auto& [flags, reason] :
       {std::pair{mig::flag_resume | mig::flag_postcopy, "its session differs"},
        std::pair{mig::flag_postcopy, "cannot start while postcopy is paused"}}) {
    const std::string uri = "unix:" + dir + "/impostor" + std::to_string(n++) + ".sock";
    auto r = dst.exec("migrate-recover", {{"uri", uri}});
    ASSERT_TRUE(r.as_object().contains("return")) << json::serialize(r);
    const auto refusal = hello_refusal(uri, flags);
    EXPECT_NE(refusal.find(reason), std::string::npos) << refusal;
    EXPECT_EQ(dst.wait_status({"postcopy-paused", "completed", "failed"}, 10s), "postcopy-paused")
      << json::serialize(dst.info()) << dst.agent->stderr_text();
    EXPECT_EQ(dst.exec("query-status").at("return").at("status"), "running");
  }
  EXPECT_EQ(src.status(), "postcopy-paused");
  const std::string again = "unix:" + dir + "/recover.sock";
  auto r = dst.exec("migrate-recover", {{"uri", again}});
  ASSERT_TRUE(r.as_object().contains("return")) << json::serialize(r);
  r = src.exec("migrate", {{"uri", again}, {"resume", true}});
  ASSERT_TRUE(r.as_object().contains("return")) << json::serialize(r);
  expect_completed();
}

// The destination killed in postcopy: the source cannot tell a dead peer
// from a cut link (nor can QEMU), so it pauses, its stale copy stopped.
// Whoever knows the destination is gone (the operator; in a cluster the
// orchestrator, when the target host reports the guest gone) abandons it
// with migrate_cancel: the source reports failed and its copy stays
// stopped — it never resumes on its own.
TEST_F(postcopy_fixture, destination_killed_source_pauses_and_cancel_fails_it_stopped) {
  begin_postcopy(0, false, 2u << 20);
  ASSERT_EQ(src.wait_status({"postcopy-active", "completed", "failed"}, 30s), "postcopy-active");
  std::this_thread::sleep_for(300ms);
  dst.agent->signal(SIGKILL);
  ASSERT_EQ(src.wait_status({"postcopy-paused", "completed", "failed"}, 30s), "postcopy-paused")
    << json::serialize(src.info()) << src.agent->stderr_text();
  EXPECT_EQ(src.exec("query-status").at("return").at("status"), "finish-migrate");
  auto r = src.exec("migrate_cancel");
  ASSERT_TRUE(r.as_object().contains("return")) << json::serialize(r);
  ASSERT_EQ(src.wait_status({"failed", "cancelled", "completed"}, 10s), "failed");
  const auto info = src.info();
  EXPECT_NE(std::string{info.at("error-desc").as_string()}.find("abandoned"), std::string::npos)
    << json::serialize(info);
  std::this_thread::sleep_for(500ms);
  EXPECT_EQ(src.exec("query-status").at("return").at("status"), "postmigrate");
  // Abandoned once is the end: another cancel does nothing, resume is refused.
  EXPECT_TRUE(src.exec("migrate_cancel").as_object().contains("return"));
  EXPECT_TRUE(src.exec("migrate", {{"uri", "unix:" + dir + "/none.sock"}, {"resume", true}})
                .as_object()
                .contains("error"));
  EXPECT_EQ(src.status(), "failed");
}

INSTANTIATE_TEST_SUITE_P(breaks, postcopy_recovery,
                         ::testing::Values(link_break::migrate_pause, link_break::connection_reset,
                                           link_break::migrate_pause_preempt,
                                           link_break::migrate_pause_release_ram),
                         [](const auto& p) { return break_name(p.param); });

TEST_F(migration_fixture, auto_converge_brings_a_hot_guest_over) {
  size = "64M";
  bytes = 64u << 20;
  start_pair("2048");
  // Too hot for 32 MiB/s and 50 ms (the hot-guest test above shows it never
  // ends without help); auto-converge slows the vCPUs until it fits.
  configure(2, {{"max-bandwidth", 32u << 20}, {"downtime-limit", 50}});
  EXPECT_TRUE(src
                .exec("migrate-set-capabilities",
                      {{"capabilities", json::array{json::object{{"capability", "auto-converge"},
                                                                 {"state", true}}}}})
                .as_object()
                .contains("return"));
  const std::string uri = listen("unix");
  ASSERT_TRUE(src.exec("migrate", {{"uri", uri}}).as_object().contains("return"));
  uint64_t max_pct = 0;
  std::string s = "setup";
  const auto deadline = std::chrono::steady_clock::now() + 90s;
  while ((s == "setup" || s == "active") && std::chrono::steady_clock::now() < deadline) {
    const auto info = src.info();
    s = std::string{info.at("status").as_string()};
    if (const auto* pct = info.if_contains("cpu-throttle-percentage"))
      max_pct = std::max(max_pct, pct->to_number<uint64_t>());
    std::this_thread::sleep_for(20ms);
  }
  ASSERT_EQ(src.wait_status({"completed", "failed"}, 10s), "completed")
    << json::serialize(src.info());
  std::printf("auto-converge: throttle up to %llu%%: %s\n",
              static_cast<unsigned long long>(max_pct), json::serialize(src.info()).c_str());
  EXPECT_GE(max_pct, 20U);
  ASSERT_EQ(dst.wait_status({"completed", "failed"}, 10s), "completed");
  ASSERT_TRUE(wait_for_text(dst.serial, "pass ", 30s));
  auto v = dump_and_verify(dst);
  EXPECT_EQ(v.status, 0) << v.output;
  EXPECT_NE(v.output.find("(0 bad)"), std::string::npos) << v.output;
}

// switchover-ack (with return-path): the source stops its guest only after
// the destination's ack; a capability on one side only is refused by the
// destination with the reason, and the source runs on.
// A silently dropped link (the network namespace): the destination
// agent runs in a namespace of its own, reached over a veth pair; with the
// host's end taken down mid-postcopy nothing arrives either way, and each
// side gives the link up after the migration link timeout (2 s here) and
// pauses. With the link back, migrate-recover and resume finish it.
class netns_destination {
public:
  netns_destination() {
    if (::geteuid() != 0 || ip_.empty())
      return;
    const auto n = static_cast<unsigned>(::getpid()) % 250 + 1;
    name_ = "fpc" + std::to_string(::getpid());
    veth_ = name_ + "h";
    host_ = "10.231." + std::to_string(n) + ".1";
    inside_ = "10.231." + std::to_string(n) + ".2";
    ok_ = ip({"netns", "add", name_}) &&
          ip({"link", "add", veth_, "type", "veth", "peer", "name", "eth0", "netns", name_}) &&
          ip({"addr", "add", host_ + "/30", "dev", veth_}) && ip({"link", "set", veth_, "up"}) &&
          ip({"-n", name_, "addr", "add", inside_ + "/30", "dev", "eth0"}) &&
          ip({"-n", name_, "link", "set", "eth0", "up"}) &&
          ip({"-n", name_, "link", "set", "lo", "up"});
  }
  ~netns_destination() {
    if (name_.empty())
      return;
    (void) ip({"link", "delete", veth_});
    (void) ip({"netns", "delete", name_});
  }
  netns_destination(const netns_destination&) = delete;
  netns_destination& operator=(const netns_destination&) = delete;

  bool ok() const { return ok_; }
  std::vector<std::string> wrap() const { return {ip_, "netns", "exec", name_}; }
  const std::string& address() const { return inside_; }
  bool set_link(bool up) { return ip({"link", "set", veth_, up ? "up" : "down"}); }

private:
  bool ip(std::vector<std::string> args) const {
    args.insert(args.begin(), ip_);
    return run(args).status == 0;
  }
  std::string ip_ = ::access("/usr/sbin/ip", X_OK) == 0 ? "/usr/sbin/ip"
                    : ::access("/sbin/ip", X_OK) == 0   ? "/sbin/ip"
                                                        : "";
  std::string name_, veth_, host_, inside_;
  bool ok_ = false;
};

TEST_F(postcopy_fixture, a_silently_dropped_link_pauses_both_sides_and_recovers) {
  if (::geteuid() != 0)
    GTEST_SKIP() << "a network namespace for the destination needs root";
  netns_destination ns;
  ASSERT_TRUE(ns.ok()) << "could not set up the destination's network namespace";
  ::setenv("FERRY_MIGRATION_LINK_TIMEOUT_MS", "2000", 1);
  dst.wrap = ns.wrap();
  begin_postcopy(0, false, 2u << 20, "tcp:" + ns.address());
  ::unsetenv("FERRY_MIGRATION_LINK_TIMEOUT_MS");
  ASSERT_EQ(src.wait_status({"postcopy-active", "completed", "failed"}, 30s), "postcopy-active");
  ASSERT_EQ(dst.wait_status({"postcopy-active", "completed", "failed"}, 30s), "postcopy-active");
  ASSERT_TRUE(ns.set_link(false));
  EXPECT_EQ(src.wait_status({"postcopy-paused", "completed", "failed"}, 30s), "postcopy-paused")
    << json::serialize(src.info()) << src.agent->stderr_text();
  EXPECT_EQ(dst.wait_status({"postcopy-paused", "completed", "failed"}, 30s), "postcopy-paused")
    << json::serialize(dst.info()) << dst.agent->stderr_text();
  EXPECT_EQ(dst.exec("query-status").at("return").at("status"), "running");
  ASSERT_TRUE(ns.set_link(true));
  const std::string again = "unix:" + dir + "/recover.sock"; // the namespace shares the files
  auto r = dst.exec("migrate-recover", {{"uri", again}});
  ASSERT_TRUE(r.as_object().contains("return")) << json::serialize(r);
  r = src.exec("migrate", {{"uri", again}, {"resume", true}});
  ASSERT_TRUE(r.as_object().contains("return")) << json::serialize(r);
  expect_completed();
}

TEST_F(migration_fixture, switchover_ack_on_both_sides_completes_and_on_one_side_is_refused) {
  size = "64M";
  bytes = 64u << 20;
  start_pair("2048");
  configure(2, {{"max-bandwidth", 1ull << 30}});
  const json::array caps{json::object{{"capability", "return-path"}, {"state", true}},
                         json::object{{"capability", "switchover-ack"}, {"state", true}}};
  ASSERT_TRUE(
    src.exec("migrate-set-capabilities", {{"capabilities", caps}}).as_object().contains("return"));
  std::string uri = listen("unix");
  ASSERT_TRUE(src.exec("migrate", {{"uri", uri}}).as_object().contains("return"));
  ASSERT_EQ(src.wait_status({"completed", "failed"}, 30s), "failed");
  EXPECT_NE(std::string{src.info().at("error-desc").as_string()}.find(
              "capability switchover-ack is on on the source but off on the destination"),
            std::string::npos)
    << json::serialize(src.info());
  EXPECT_EQ(src.exec("query-status").at("return").at("status"), "running");
  // Both sides on: it completes and verifies.
  dst.agent->wait(10s); // exit-on-error ended the refused destination
  start(dst, {"-incoming", "defer"});
  configure(2, {{"max-bandwidth", 1ull << 30}});
  ASSERT_TRUE(
    dst.exec("migrate-set-capabilities", {{"capabilities", caps}}).as_object().contains("return"));
  uri = listen("unix");
  ASSERT_TRUE(src.exec("migrate", {{"uri", uri}}).as_object().contains("return"));
  ASSERT_EQ(src.wait_status({"completed", "failed"}, 60s), "completed")
    << json::serialize(src.info());
  ASSERT_EQ(dst.wait_status({"completed", "failed"}, 10s), "completed");
  expect_destination_runs_on("16128");
}

TEST_F(migration_fixture, xbzrle_carries_a_running_guest_as_deltas) {
  size = "64M";
  bytes = 64u << 20;
  start_pair("2048");
  // downtime-limit 0 holds it in the dirty passes while the guest writes
  // (a sync that finds nothing dirty ends it, as in QEMU: a vCPU kept off
  // the host CPU for a whole pass can do that) until deltas have gone; then
  // 300 ms lets it finish.
  configure(0, {{"downtime-limit", 0}, {"xbzrle-cache-size", 16u << 20}});
  EXPECT_TRUE(src
                .exec("migrate-set-capabilities",
                      {{"capabilities",
                        json::array{json::object{{"capability", "xbzrle"}, {"state", true}}}}})
                .as_object()
                .contains("return"));
  const std::string uri = listen("tcp");
  ASSERT_TRUE(src.exec("migrate", {{"uri", uri}}).as_object().contains("return"));
  const auto deadline = std::chrono::steady_clock::now() + 60s;
  uint64_t delta_pages = 0;
  std::string status = "setup";
  while (delta_pages < 4096 && (status == "setup" || status == "active") &&
         std::chrono::steady_clock::now() < deadline) {
    const auto i = src.info();
    status = std::string{i.at("status").as_string()};
    if (const auto* x = i.if_contains("xbzrle-cache"))
      delta_pages = x->at("pages").to_number<uint64_t>();
    std::this_thread::sleep_for(20ms);
  }
  EXPECT_TRUE(
    src.exec("migrate-set-parameters", {{"downtime-limit", 300}}).as_object().contains("return"));
  ASSERT_EQ(src.wait_status({"completed", "failed"}, 60s), "completed")
    << json::serialize(src.info());
  ASSERT_EQ(dst.wait_status({"completed", "failed"}, 10s), "completed")
    << json::serialize(dst.info()) << dst.agent->stderr_text();
  const auto info = src.info();
  std::printf("xbzrle: %s\n", json::serialize(info).c_str());
  const auto& xbz = info.at("xbzrle-cache").as_object();
  EXPECT_GT(xbz.at("pages").to_number<uint64_t>(), 0U) << "pages went as deltas";
  EXPECT_GT(xbz.at("encoding-rate").to_number<double>(), 10.0) << json::serialize(xbz);
  EXPECT_GE(xbz.at("cache-miss").to_number<uint64_t>(), 1U);
  EXPECT_EQ(xbz.at("cache-size").to_number<uint64_t>(), 16u << 20);
  EXPECT_EQ(src.exec("query-status").at("return").at("status"), "postmigrate");
  expect_destination_runs_on("16128");
}

TEST_F(migration_fixture, calc_dirty_rate_in_every_mode_is_within_a_quarter_of_the_truth) {
  FERRY_REQUIRE_KVM();
  // The guest rewrites a 16 MiB working set dozens of times a second (still
  // several times with a busy host): in a 1 s period every page of it is
  // dirtied, so the truth is 16 MiB/s (plus the few pages of its stack and
  // variables).
  make_guest("4096");
  auto measure = [](host& h, const json::object& args) {
    auto info = measure_dirty_rate(h, args);
    std::printf("%s -> %s\n", json::serialize(args).c_str(), json::serialize(info).c_str());
    return info;
  };
  auto expect_truth = [](const json::object& info) {
    ASSERT_EQ(info.at("status"), "measured");
    EXPECT_NEAR(info.at("dirty-rate").to_number<double>(), 16.0, 4.0) << json::serialize(info);
  };
  const std::vector<std::string> ram_args{
    "-object", "memory-backend-file,id=ram0,size=" + size + ",mem-path=" + ram + ",share=off",
    "-machine", "memory-backend=ram0"};

  // The dirty-ring VM: page-sampling and dirty-ring.
  auto args = ram_args;
  args.insert(args.end(), {"-accel", "kvm,dirty-ring-size=4096"});
  start(src, args);
  ASSERT_TRUE(wait_for_text(src.serial, "pass 00000028", 30s)) << read_file(src.serial);
  expect_truth(measure(src, {{"calc-time", 1}, {"sample-pages", 16384}}));
  const auto ring = measure(src, {{"calc-time", 1}, {"mode", "dirty-ring"}});
  expect_truth(ring);
  ASSERT_TRUE(ring.contains("vcpu-dirty-rate"));
  const auto& per_vcpu = ring.at("vcpu-dirty-rate").as_array();
  ASSERT_EQ(per_vcpu.size(), 1U);
  EXPECT_EQ(per_vcpu[0].at("id"), 0);
  EXPECT_EQ(per_vcpu[0].at("dirty-rate"), ring.at("dirty-rate"));
  EXPECT_NE(
    json::serialize(src.exec("calc-dirty-rate", {{"calc-time", 1}, {"mode", "dirty-bitmap"}}))
      .find("mode dirty-bitmap is not enabled"),
    std::string::npos);

  // The bitmap VM: dirty-bitmap.
  start(dst, ram_args);
  ASSERT_TRUE(wait_for_text(dst.serial, "pass 00000028", 30s)) << read_file(dst.serial);
  expect_truth(measure(dst, {{"calc-time", 1}, {"mode", "dirty-bitmap"}}));
}

TEST_F(migration_fixture, three_vcpus_dirty_at_their_own_rates_and_all_arrive) {
  FERRY_REQUIRE_KVM();
  size = "128M";
  bytes = 128u << 20;
  make_guest("8192"); // per vCPU: 32 MiB each, 96 MiB together
  std::vector<std::string> args{
    "-smp",     "3",
    "-accel",   "kvm,dirty-ring-size=4096",
    "-object",  "memory-backend-file,id=ram0,size=" + size + ",mem-path=" + ram + ",share=off",
    "-machine", "memory-backend=ram0"};
  start(src, args);
  ASSERT_TRUE(wait_for_text(src.serial, "pass 00000028", 30s)) << read_file(src.serial);

  // vCPU 0 sweeps its set many times a second (its rate is the set's size
  // over the period); vCPUs 1 and 2 spin 256 and 512 iterations per page
  // and do not get through theirs in the period: three different rates.
  const auto info = measure_dirty_rate(src, {{"calc-time", 1}, {"mode", "dirty-ring"}});
  std::printf("3 vCPUs: %s\n", json::serialize(info).c_str());
  const auto& per = info.at("vcpu-dirty-rate").as_array();
  ASSERT_EQ(per.size(), 3U);
  std::vector<int64_t> rate;
  for (const auto& v : per)
    rate.push_back(v.at("dirty-rate").to_number<int64_t>());
  EXPECT_GT(rate[2], 0) << "every vCPU dirties";
  EXPECT_GT(rate[0], rate[1]) << "vCPU 1 spins per page";
  EXPECT_GT(rate[1], rate[2]) << "vCPU 2 spins twice as long";
  EXPECT_NEAR(static_cast<double>(info.at("dirty-rate").to_number<int64_t>()),
              static_cast<double>(rate[0] + rate[1] + rate[2]), 3.0)
    << "the sets are disjoint: the total is the sum";
  // Measuring left the guest running (KVM's ring accounting must be left
  // consistent: a vCPU that KVM counts "full" would stop for ever).
  const size_t pass_then = last_pass(read_file(src.serial));
  const auto run_by = std::chrono::steady_clock::now() + 20s;
  while (last_pass(read_file(src.serial)) <= pass_then && std::chrono::steady_clock::now() < run_by)
    std::this_thread::sleep_for(50ms);
  EXPECT_GT(last_pass(read_file(src.serial)), pass_then) << "vCPU 0 runs on after the measurement";

  // Migrate it running; every vCPU's set verifies on the destination.
  std::vector<std::string> dst_args{"-smp", "3", "-incoming", "defer"};
  start(dst, dst_args);
  configure(2, {{"downtime-limit", 1000}});
  const std::string uri = listen("tcp");
  ASSERT_TRUE(src.exec("migrate", {{"uri", uri}}).as_object().contains("return"));
  ASSERT_EQ(src.wait_status({"completed", "failed"}, 60s), "completed")
    << json::serialize(src.info());
  ASSERT_EQ(dst.wait_status({"completed", "failed"}, 10s), "completed")
    << json::serialize(dst.info()) << dst.agent->stderr_text();
  ASSERT_TRUE(wait_for_text(dst.serial, "pass ", 30s));
  EXPECT_TRUE(dst.exec("stop").as_object().contains("return"));
  const std::string dump = dir + "/dst.dump";
  EXPECT_TRUE(dst.exec("pmemsave", {{"val", 0}, {"size", bytes}, {"filename", dump}})
                .as_object()
                .contains("return"));
  auto v = run({binary("tools/ferry-verify"), dump, "--vcpus", "3"});
  EXPECT_EQ(v.status, 0) << v.output;
  EXPECT_NE(v.output.find("consistent: 32512 pattern pages (0 bad)"), std::string::npos)
    << v.output;
  // All three sets were moving: none is still all zero.
  std::ifstream in{dump, std::ios::binary};
  for (uint32_t cpu = 0; cpu < 3; ++cpu) {
    uint32_t counter = 0;
    in.seekg(static_cast<std::streamoff>((1u << 20) + cpu * (8192u << 12)));
    in.read(reinterpret_cast<char*>(&counter), 4);
    EXPECT_GT(counter, 0U) << "vCPU " << cpu << "'s first page";
  }
}

TEST_F(migration_fixture, vcpu_dirty_limit_holds_a_vcpu_to_its_quota) {
  FERRY_REQUIRE_KVM();
  size = "128M";
  bytes = 128u << 20;
  make_guest("8192");
  std::vector<std::string> args{
    "-smp",     "2",
    "-accel",   "kvm,dirty-ring-size=4096",
    "-object",  "memory-backend-file,id=ram0,size=" + size + ",mem-path=" + ram + ",share=off",
    "-machine", "memory-backend=ram0"};
  start(src, args);
  ASSERT_TRUE(wait_for_text(src.serial, "pass 00000028", 30s)) << read_file(src.serial);
  auto error_of = [](const json::value& r) {
    return r.as_object().contains("error") ? std::string{r.at("error").at("desc").as_string()}
                                           : std::string{"<ok>"};
  };
  EXPECT_EQ(error_of(src.exec("set-vcpu-dirty-limit", {{"cpu-index", 2}, {"dirty-rate", 4}})),
            "incorrect cpu index specified");
  EXPECT_EQ(src.exec("query-vcpu-dirty-limit").at("return"), json::array{});

  auto vcpu_rates = [&] {
    const auto info = measure_dirty_rate(src, {{"calc-time", 1}, {"mode", "dirty-ring"}});
    std::vector<int64_t> out;
    for (const auto& v : info.at("vcpu-dirty-rate").as_array())
      out.push_back(v.at("dirty-rate").to_number<int64_t>());
    return out;
  };
  const auto before = vcpu_rates();
  ASSERT_EQ(before.size(), 2U);
  std::printf("unlimited: vCPU 0 %lld MiB/s, vCPU 1 %lld MiB/s\n",
              static_cast<long long>(before[0]), static_cast<long long>(before[1]));
  ASSERT_GT(before[0], 12) << "vCPU 0 must dirty well above the quota for the test to mean much";

  // vCPU 0 is held to 4 MiB/s; vCPU 1 is left alone.
  EXPECT_EQ(error_of(src.exec("set-vcpu-dirty-limit", {{"cpu-index", 0}, {"dirty-rate", 4}})),
            "<ok>");
  auto current = [&] {
    const auto q = src.exec("query-vcpu-dirty-limit").at("return").as_array();
    EXPECT_EQ(q.size(), 1U);
    EXPECT_EQ(q.at(0).at("cpu-index"), 0);
    EXPECT_EQ(q.at(0).at("limit-rate").to_number<uint64_t>(), 4U);
    return q.at(0).at("current-rate").to_number<uint64_t>();
  };
  // The brake settles within a few periods (1 s each; the first reading
  // comes after the first period)...
  std::this_thread::sleep_for(1500ms);
  // Settled: two readings in a row at or under the quota (one alone may be
  // a period in which a loaded host barely ran the vCPU).
  const auto settle_by = std::chrono::steady_clock::now() + 20s;
  for (int under = 0; under < 2 && std::chrono::steady_clock::now() < settle_by;) {
    under = current() <= 4 ? under + 1 : 0;
    std::this_thread::sleep_for(500ms);
  }
  // ...and then holds the rate near the quota: most seconds (the median of
  // six) at no more than twice the quota.
  std::vector<uint64_t> readings;
  std::string samples;
  for (int i = 0; i < 6; ++i) {
    std::this_thread::sleep_for(1s);
    const uint64_t c = current();
    readings.push_back(c);
    samples += std::to_string(c) + " ";
  }
  std::sort(readings.begin(), readings.end());
  const auto limited = vcpu_rates();
  std::printf("limited: vCPU 0 every second: %s MiB/s; vCPU 1 %lld MiB/s\n", samples.c_str(),
              static_cast<long long>(limited[1]));
  EXPECT_LE(readings[3], 8U) << "vCPU 0 held near its quota of 4 MiB/s: " << samples;
  EXPECT_GE(limited[1], before[1] / 2) << "vCPU 1 was not limited";

  EXPECT_EQ(error_of(src.exec("cancel-vcpu-dirty-limit", json::object{})), "<ok>");
  EXPECT_EQ(src.exec("query-vcpu-dirty-limit").at("return"), json::array{});
  std::this_thread::sleep_for(300ms);
  const size_t pass_at_cancel = last_pass(read_file(src.serial));
  const auto after = vcpu_rates();
  std::printf("after cancel: vCPU 0 %lld MiB/s, passes %zu -> %zu\n",
              static_cast<long long>(after[0]), pass_at_cancel, last_pass(read_file(src.serial)));
  EXPECT_GT(after[0], 12) << "free again";

  // The guest still verifies: holding vCPUs loses nothing.
  EXPECT_TRUE(src.exec("stop").as_object().contains("return"));
  const std::string dump = dir + "/src.dump";
  EXPECT_TRUE(src.exec("pmemsave", {{"val", 0}, {"size", bytes}, {"filename", dump}})
                .as_object()
                .contains("return"));
  auto v = run({binary("tools/ferry-verify"), dump, "--vcpus", "2"});
  EXPECT_EQ(v.status, 0) << v.output;
}

TEST_F(migration_fixture, dirty_limit_brings_a_hot_kvm_guest_over) {
  FERRY_REQUIRE_KVM();
  size = "64M";
  bytes = 64u << 20;
  make_guest("2048");
  // As in auto_converge_brings_a_hot_kvm_guest_over: too hot for 32 MiB/s
  // and 50 ms without help. Here the dirty ring tracks the pages, and the
  // dirty-limit capability holds every vCPU to vcpu-dirty-limit.
  start(src, {"-accel", "kvm,dirty-ring-size=4096", "-object",
              "memory-backend-file,id=ram0,size=" + size + ",mem-path=" + ram + ",share=off",
              "-machine", "memory-backend=ram0"});
  ASSERT_TRUE(wait_for_text(src.serial, "pass 00000028", 30s)) << read_file(src.serial);
  start(dst, {"-incoming", "defer"});
  configure(2, {{"max-bandwidth", 32u << 20},
                {"downtime-limit", 50},
                {"vcpu-dirty-limit", 1},
                {"x-vcpu-dirty-limit-period", 500}});
  {
    // Without the capability the same guest keeps it iterating.
    const std::string uri = listen("unix");
    ASSERT_TRUE(src.exec("migrate", {{"uri", uri}}).as_object().contains("return"));
    const auto until = std::chrono::steady_clock::now() + 60s;
    uint64_t syncs = 0;
    while (syncs < 8 && std::chrono::steady_clock::now() < until) {
      const auto i = src.info();
      if (const auto* ram_info = i.if_contains("ram"))
        syncs = ram_info->at("dirty-sync-count").to_number<uint64_t>();
      std::this_thread::sleep_for(50ms);
    }
    EXPECT_EQ(src.info().at("status"), "active") << "without dirty-limit it does not converge";
    EXPECT_FALSE(src.info().contains("dirty-limit-throttle-time-per-round"));
    EXPECT_TRUE(src.exec("migrate_cancel").as_object().contains("return"));
    EXPECT_EQ(src.wait_status({"cancelled"}, 10s), "cancelled");
    EXPECT_EQ(dst.agent->wait(10s), 1) << "the destination gives up";
    std::remove((dir + "/mig.sock").c_str());
    start(dst, {"-incoming", "defer"});
    configure(2, {});
  }
  EXPECT_TRUE(src
                .exec("migrate-set-capabilities",
                      {{"capabilities",
                        json::array{json::object{{"capability", "dirty-limit"}, {"state", true}}}}})
                .as_object()
                .contains("return"));
  const std::string uri = listen("unix");
  ASSERT_TRUE(src.exec("migrate", {{"uri", uri}}).as_object().contains("return"));
  uint64_t per_round = 0;
  uint64_t ring_full = 0;
  bool refused = false;
  std::string s = "setup";
  const auto deadline = std::chrono::steady_clock::now() + 90s;
  while ((s == "setup" || s == "active") && std::chrono::steady_clock::now() < deadline) {
    const auto info = src.info();
    s = std::string{info.at("status").as_string()};
    if (const auto* t = info.if_contains("dirty-limit-throttle-time-per-round")) {
      per_round = std::max(per_round, t->to_number<uint64_t>());
      ring_full = std::max(ring_full, info.at("dirty-limit-ring-full-time").to_number<uint64_t>());
      if (!refused) {
        const auto r = src.exec("set-vcpu-dirty-limit", {{"dirty-rate", 100}});
        refused = r.as_object().contains("error") &&
                  std::string{r.at("error").at("desc").as_string()} ==
                    "can't set dirty page rate limit while migration is running";
      }
    }
    std::this_thread::sleep_for(20ms);
  }
  ASSERT_EQ(src.wait_status({"completed", "failed"}, 10s), "completed")
    << json::serialize(src.info());
  std::printf("dirty-limit: throttle per round up to %llu us, ring full %llu us: %s\n",
              static_cast<unsigned long long>(per_round),
              static_cast<unsigned long long>(ring_full), json::serialize(src.info()).c_str());
  EXPECT_GT(per_round, 0U) << "dirty-limit-throttle-time-per-round was reported";
  EXPECT_GT(ring_full, 0U) << "dirty-limit-ring-full-time was reported";
  EXPECT_TRUE(refused) << "the migration owns the limit while it runs";
  EXPECT_EQ(src.exec("query-vcpu-dirty-limit").at("return"), json::array{})
    << "the limit ends with the migration";
  ASSERT_EQ(dst.wait_status({"completed", "failed"}, 10s), "completed");
  expect_destination_runs_on("16128");
}
