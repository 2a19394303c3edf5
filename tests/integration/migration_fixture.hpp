#pragma once
// The two-agent fixture of the migration process tests: a test guest
// pre-filled with its pattern runs on `src` (KVM where usable, else the
// -accel none dirtier playing it), `dst` waits with -incoming defer; helpers
// to configure both, listen, and verify a side's memory with ferry-verify.
// Shared by migration_process_test.cpp and colo_process_test.cpp.

#include "tests/support/kvm_skip.hpp"
#include "tests/support/process.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/wait_status.hpp"
#include "tools/qmp/qmp_client.hpp"

#include <boost/json.hpp>
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace ferry::test {

using ferry::qmp_tool::qmp_client;
using namespace std::chrono_literals;
namespace json = boost::json;

struct host {
  std::string name;
  std::string qmp;
  std::string serial;
  std::unique_ptr<process> agent;
  std::unique_ptr<qmp_client> q;
  // Run the agent through this (a network namespace's `ip netns exec NS`).
  std::vector<std::string> wrap{};

  json::value exec(const std::string& cmd, const json::object& args = {}) {
    return q->execute(cmd, args);
  }
  json::object info() { return exec("query-migrate").at("return").as_object(); }
  std::string status() {
    const auto i = info();
    return i.contains("status") ? std::string{i.at("status").as_string()} : "none";
  }
  std::string wait_status(std::initializer_list<const char*> want, std::chrono::seconds limit) {
    return wait_for_status([this] { return status(); }, want, limit, 20ms);
  }
};

struct migration_fixture : ::testing::Test {
  temp_dir tmp;
  std::string dir = tmp.path();
  std::string image = dir + "/guest.img";
  std::string ram = dir + "/ram.bin";
  std::string size = "256M";
  uint64_t bytes = 256u << 20;
  host src{"src", dir + "/src.sock", dir + "/src.txt", {}, {}};
  host dst{"dst", dir + "/dst.sock", dir + "/dst.txt", {}, {}};
  // More of the source's command line (start_pair).
  std::vector<std::string> src_extra;
  // The disk flags of every agent started (empty: the raw test image).
  std::vector<std::string> disk_args;

  void make_guest(const std::string& ws_pages) {
    auto r = run({binary("tools/ferry-testguest"), "image", image, "--ram-top", size, "--ws-pages",
                  ws_pages, "--report-every", "20"});
    ASSERT_EQ(r.status, 0) << r.output;
    r = run({binary("tools/ferry-testguest"), "pattern", ram, "--size", size, "--image", image});
    ASSERT_EQ(r.status, 0) << r.output;
  }

  void start(host& h, std::vector<std::string> extra) {
    std::vector<std::string> argv{binary("agent/ferry-agent"),
                                  "vm",
                                  "-name",
                                  h.name,
                                  "-m",
                                  size,
                                  "-qmp",
                                  "unix:" + h.qmp + ",server=on,wait=off",
                                  "-serial",
                                  "file:" + h.serial};
    if (disk_args.empty())
      argv.insert(argv.end(), {"-drive", "file=" + image + ",format=raw"});
    argv.insert(argv.end(), disk_args.begin(), disk_args.end());
    // Without an accelerator named, both ends get the same one: KVM where
    // usable, else the -accel none dirtier.
    if (std::find(extra.begin(), extra.end(), "-accel") == extra.end()) {
      const auto accel = test_accel();
      argv.insert(argv.end(), accel.begin(), accel.end());
    }
    argv.insert(argv.end(), extra.begin(), extra.end());
    argv.insert(argv.begin(), h.wrap.begin(), h.wrap.end());
    h.agent = std::make_unique<process>(argv);
    const auto started = std::chrono::steady_clock::now();
    try {
      h.q = std::make_unique<qmp_client>(h.qmp);
    } catch (const std::exception& e) {
      // Why the agent never answered: its own words, and whether it is
      // still alive (a start stalled by the host, or an exit).
      const bool alive = h.agent->running();
      ADD_FAILURE() << h.name << ": " << e.what() << " after "
                    << std::chrono::duration_cast<std::chrono::milliseconds>(
                         std::chrono::steady_clock::now() - started)
                         .count()
                    << " ms; the agent is " << (alive ? "still running" : "gone")
                    << "; its stderr:\n"
                    << h.agent->stderr_text();
      throw;
    }
    h.q->negotiate();
  }

  // The source runs the pre-filled guest; the destination waits for it.
  // With `tls`, both get migration credentials made by the PKI script.
  void start_pair(const std::string& ws_pages = "2048", bool tls = false) {
    make_guest(ws_pages);
    std::vector<std::string> src_tls, dst_tls;
    if (tls) {
      const std::string pki = dir + "/pki";
      auto r = run({"/bin/bash", FERRY_SOURCE_DIR "/deploy/pki/ferry-pki.sh", pki});
      ASSERT_EQ(r.status, 0) << r.output;
      src_tls = {"-object", "tls-creds-x509,id=tls0,dir=" + pki + ",endpoint=client"};
      dst_tls = {"-object", "tls-creds-x509,id=tls0,dir=" + pki + ",endpoint=server,verify-peer=on",
                 "-object", "authz-simple,id=auth0,identity=CN=ferry-migration-client,,O=Ferry"};
    }
    std::vector<std::string> src_args{
      "-object", "memory-backend-file,id=ram0,size=" + size + ",mem-path=" + ram + ",share=off",
      "-machine", "memory-backend=ram0"};
    src_args.insert(src_args.end(), src_tls.begin(), src_tls.end());
    src_args.insert(src_args.end(), src_extra.begin(), src_extra.end());
    start(src, src_args);
    ASSERT_TRUE(wait_for_text(src.serial, "pass 00000028", 30s))
      << read_file(src.serial) << src.agent->stderr_text();
    std::vector<std::string> dst_args{"-incoming", "defer"};
    dst_args.insert(dst_args.end(), dst_tls.begin(), dst_tls.end());
    start(dst, dst_args);
    if (tls) {
      EXPECT_TRUE(
        src.exec("migrate-set-parameters", {{"tls-creds", "tls0"}}).as_object().contains("return"));
      EXPECT_TRUE(
        dst.exec("migrate-set-parameters", {{"tls-creds", "tls0"}, {"tls-authz", "auth0"}})
          .as_object()
          .contains("return"));
    }
    EXPECT_EQ(dst.exec("query-status").at("return").at("status"), "inmigrate");
  }

  void configure(uint32_t channels, const json::object& src_params) {
    for (host* h : {&src, &dst}) {
      json::array caps{json::object{{"capability", "events"}, {"state", true}}};
      if (channels > 0)
        caps.push_back(json::object{{"capability", "multifd"}, {"state", true}});
      EXPECT_TRUE(h->exec("migrate-set-capabilities", {{"capabilities", caps}})
                    .as_object()
                    .contains("return"));
      if (channels > 0) {
        EXPECT_TRUE(h->exec("migrate-set-parameters", {{"multifd-channels", channels}})
                      .as_object()
                      .contains("return"));
      }
    }
    EXPECT_TRUE(src.exec("migrate-set-parameters", src_params).as_object().contains("return"));
  }

  // migrate-incoming on the destination; the uri the source must use.
  // `transport`: "unix", "tcp" (loopback) or "tcp:ADDRESS".
  std::string listen(const std::string& transport, bool exit_on_error = true) {
    const bool tcp = transport.rfind("tcp", 0) == 0;
    const std::string host = transport.size() > 4 ? transport.substr(4) : "127.0.0.1";
    std::string uri = tcp ? "tcp:" + host + ":0" : "unix:" + dir + "/mig.sock";
    auto r = dst.exec("migrate-incoming", {{"uri", uri}, {"exit-on-error", exit_on_error}});
    EXPECT_TRUE(r.as_object().contains("return")) << json::serialize(r);
    if (!tcp)
      return uri;
    return "tcp:" + host + ":" +
           std::string{dst.info().at("socket-address").at(0).at("port").as_string()};
  }

  run_result dump_and_verify(host& h) {
    EXPECT_TRUE(h.exec("stop").as_object().contains("return"));
    const std::string dump = dir + "/" + h.name + ".dump";
    auto r = h.exec("pmemsave", {{"val", 0}, {"size", bytes}, {"filename", dump}});
    EXPECT_TRUE(r.as_object().contains("return")) << json::serialize(r);
    return run({binary("tools/ferry-verify"), dump});
  }

  // After a completed migration: the guest goes on counting on the
  // destination from where it was, without booting again, and its memory
  // verifies (`pattern_pages` of the pre-filled pattern intact).
  void expect_destination_runs_on(const std::string& pattern_pages) {
    const size_t left_at = last_pass(read_file(src.serial));
    ASSERT_TRUE(wait_for_text(dst.serial, "pass ", 30s)) << dst.agent->stderr_text();
    EXPECT_EQ(dst.exec("query-status").at("return").at("status"), "running");
    const auto deadline = std::chrono::steady_clock::now() + 30s;
    while (last_pass(read_file(dst.serial)) <= left_at &&
           std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(20ms);
    EXPECT_GT(last_pass(read_file(dst.serial)), left_at) << read_file(dst.serial);
    EXPECT_EQ(read_file(dst.serial).find("ready"), std::string::npos)
      << "the guest must not boot again on the destination";
    auto v = dump_and_verify(dst);
    EXPECT_EQ(v.status, 0) << v.output;
    EXPECT_NE(v.output.find("consistent: " + pattern_pages + " pattern pages (0 bad)"),
              std::string::npos)
      << v.output;
  }

  // calc-dirty-rate with `args` on `h`, then query-dirty-rate until it has
  // measured (DirtyRateInfo).
  static json::object measure_dirty_rate(host& h, const json::object& args) {
    auto r = h.exec("calc-dirty-rate", args);
    EXPECT_TRUE(r.as_object().contains("return")) << json::serialize(r);
    const auto deadline = std::chrono::steady_clock::now() + 30s;
    json::value info;
    do {
      std::this_thread::sleep_for(50ms);
      info = h.exec("query-dirty-rate").at("return");
    } while (info.at("status") != "measured" && std::chrono::steady_clock::now() < deadline);
    return info.as_object();
  }

  static size_t last_pass(const std::string& serial_text) {
    const size_t at = serial_text.rfind("pass ");
    return at == std::string::npos ? 0 : std::stoul(serial_text.substr(at + 5, 8), nullptr, 16);
  }
};

} // namespace ferry::test
