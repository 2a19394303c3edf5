// ferry-agent as a process, driven the way an operator's script drives QEMU:
// command-line flags, a QMP socket, pmemsave, and ferry-verify on the dump.

#include "tests/support/kvm_skip.hpp"
#include "tests/support/process.hpp"
#include "tools/qmp/qmp_client.hpp"

#include <boost/json.hpp>
#include <gtest/gtest.h>

#include <signal.h>

using namespace ferry::test;
using ferry::qmp_tool::qmp_client;
using namespace std::chrono_literals;
namespace json = boost::json;

namespace {

struct agent_fixture : ::testing::Test {
  temp_dir tmp;
  std::string dir = tmp.path();
  std::string image = dir + "/guest.img";
  std::string ram = dir + "/ram.bin";
  std::string qmp_path = dir + "/qmp.sock";
  std::string serial = dir + "/serial.txt";

  // A test guest image and, with `ram_size`, a RAM file pre-filled with its
  // pattern — both made by the shipped tools.
  void make_guest(const std::string& ram_size, std::vector<std::string> image_args) {
    std::vector<std::string> argv{binary("tools/ferry-testguest"), "image", image};
    argv.insert(argv.end(), image_args.begin(), image_args.end());
    auto r = run(argv);
    ASSERT_EQ(r.status, 0) << r.output;
    r =
      run({binary("tools/ferry-testguest"), "pattern", ram, "--size", ram_size, "--image", image});
    ASSERT_EQ(r.status, 0) << r.output;
  }

  std::unique_ptr<process> start_agent(std::vector<std::string> extra) {
    std::vector<std::string> argv{binary("agent/ferry-agent"), "vm"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    return std::make_unique<process>(argv);
  }

  std::vector<std::string> prefilled_args(const std::string& size) {
    return {
      "-name",    "t1",
      "-m",       size,
      "-object",  "memory-backend-file,id=ram0,size=" + size + ",mem-path=" + ram + ",share=off",
      "-machine", "memory-backend=ram0",
      "-drive",   "file=" + image + ",format=raw",
      "-qmp",     "unix:" + qmp_path + ",server=on,wait=off",
      "-serial",  "file:" + serial};
  }

  // A 16 MiB -accel none guest (no KVM needed) with `extra` flags.
  std::unique_ptr<process> start_small_agent(std::vector<std::string> extra) {
    make_guest("16M", {"--ram-top", "16M"});
    auto args = prefilled_args("16M");
    args.insert(args.end(), {"-accel", "none"});
    args.insert(args.end(), extra.begin(), extra.end());
    return start_agent(args);
  }

  // stop + pmemsave of all RAM + ferry-verify.
  run_result dump_and_verify(qmp_client& q, uint64_t bytes) {
    EXPECT_TRUE(q.execute("stop").as_object().contains("return"));
    const std::string dump = dir + "/dump.bin";
    auto r = q.execute("pmemsave", {{"val", 0}, {"size", bytes}, {"filename", dump}});
    EXPECT_TRUE(r.as_object().contains("return")) << json::serialize(r);
    return run({binary("tools/ferry-verify"), dump});
  }
};

} // namespace

TEST_F(agent_fixture, prefilled_kvm_guest_boots_and_its_dump_verifies) {
  FERRY_REQUIRE_KVM();
  make_guest("256M", {"--ram-top", "256M", "--ws-pages", "1024", "--report-every", "20"});
  auto agent = start_agent(prefilled_args("256M"));
  ASSERT_TRUE(wait_for_text(serial, "pass 00000028", 30s))
    << read_file(serial) << agent->stderr_text();
  EXPECT_EQ(read_file(serial).find("fill"), std::string::npos);
  qmp_client q{qmp_path};
  q.negotiate();
  EXPECT_EQ(q.execute("query-status").at("return").at("status"), "running");
  EXPECT_EQ(q.execute("query-name").at("return").at("name"), "t1");
  auto v = dump_and_verify(q, 256u << 20);
  EXPECT_EQ(v.status, 0) << v.output;
  EXPECT_NE(v.output.find("consistent: 65280 pattern pages (0 bad)"), std::string::npos)
    << v.output;
  EXPECT_EQ(q.execute("query-status").at("return").at("status"), "paused");
  auto stop_event = q.next_event(5s);
  ASSERT_TRUE(stop_event);
  EXPECT_EQ(stop_event->at("event"), "STOP");
  EXPECT_TRUE(q.execute("cont").as_object().contains("return"));
  EXPECT_EQ(q.execute("query-status").at("return").at("status"), "running");
  EXPECT_TRUE(q.execute("quit").as_object().contains("return"));
  EXPECT_EQ(agent->wait(10s), 0) << agent->stderr_text();
}

TEST_F(agent_fixture, accel_none_guest_is_driven_and_verified_the_same_way) {
  make_guest("64M", {"--ram-top", "64M", "--ws-pages", "512"});
  auto args = prefilled_args("64M");
  args.insert(args.end(), {"-accel", "none,dirty-rate=100000"});
  auto agent = start_agent(args);
  qmp_client q{qmp_path};
  q.negotiate();
  std::this_thread::sleep_for(300ms);
  auto v = dump_and_verify(q, 64u << 20);
  EXPECT_EQ(v.status, 0) << v.output;
  EXPECT_EQ(v.output.find("counters 0..0"), std::string::npos)
    << "the dirtier must have run: " << v.output;
  q.execute("quit");
  EXPECT_EQ(agent->wait(10s), 0) << agent->stderr_text();
}

TEST_F(agent_fixture, wire_protocol_rules_hold_over_the_socket) {
  auto agent = start_small_agent({"-S"});
  qmp_client q{qmp_path};
  EXPECT_EQ(q.greeting().at("QMP").at("version").at("qemu").at("major"), 9);
  auto early = q.execute("query-status");
  EXPECT_EQ(early.at("error").at("class"), "CommandNotFound");
  q.negotiate();
  auto again = q.execute("qmp_capabilities");
  EXPECT_EQ(again.at("error").at("class"), "CommandNotFound");
  // Malformed JSON: an error, and the connection keeps working.
  auto bad = q.send_raw("{\"execute\": oops}\n");
  EXPECT_EQ(bad.at("error").at("class"), "GenericError");
  auto withid = q.send_raw("{\"execute\":\"query-status\",\"id\":{\"n\":[1,2]}}\n");
  EXPECT_EQ(withid.at("id"), json::parse("{\"n\":[1,2]}"));
  EXPECT_EQ(withid.at("return").at("status"), "prelaunch") << "-S starts paused";
  EXPECT_EQ(q.execute("query-migrate").at("return"), json::object{});
  EXPECT_EQ(q.execute("query-migrate-parameters").at("return").at("downtime-limit"), 300);
  EXPECT_EQ(q.execute("migrate", {{"uri", "rdma:127.0.0.1:1"}}).at("error").at("desc"),
            "RDMA migration is not supported by Ferry");
  // Two commands in one write, answered in order.
  auto first =
    q.send_raw("{\"execute\":\"query-name\",\"id\":1}{\"execute\":\"query-uuid\",\"id\":2}\n");
  EXPECT_EQ(first.at("id"), 1);
  EXPECT_EQ(q.next_reply().at("id"), 2);
  // A second client sees events caused by the first.
  qmp_client other{qmp_path};
  other.negotiate();
  EXPECT_TRUE(q.execute("cont").as_object().contains("return"));
  auto resume = other.next_event(5s);
  ASSERT_TRUE(resume);
  EXPECT_EQ(resume->at("event"), "RESUME");
  EXPECT_TRUE(resume->at("timestamp").as_object().contains("microseconds"));
  q.execute("quit");
  EXPECT_EQ(agent->wait(10s), 0);
}

// As with QEMU without -S, a client that connects the moment the socket is
// there finds the guest already running: the monitor answers only after the
// guest has left prelaunch (a script's first query-status must not race it).
TEST_F(agent_fixture, the_first_answer_already_sees_a_running_guest) {
  make_guest("16M", {"--ram-top", "16M"});
  auto args = prefilled_args("16M");
  args.insert(args.end(), {"-accel", "none"});
  for (int round = 0; round < 5; ++round) {
    auto agent = start_agent(args);
    qmp_client q{qmp_path};
    q.negotiate();
    EXPECT_EQ(q.execute("query-status").at("return").at("status"), "running") << "round " << round;
    q.execute("quit");
    EXPECT_EQ(agent->wait(10s), 0) << agent->stderr_text();
  }
}

TEST_F(agent_fixture, out_of_band_execution_follows_the_capability_and_the_schema) {
  auto agent = start_small_agent({});
  qmp_client plain{qmp_path};
  EXPECT_EQ(plain.greeting().at("QMP").at("capabilities"), json::array{"oob"});
  plain.negotiate();
  EXPECT_EQ(plain.send_raw("{\"exec-oob\":\"migrate-pause\",\"id\":1}\n").at("error").at("desc"),
            "QMP input member 'exec-oob' is unexpected");

  qmp_client q{qmp_path};
  EXPECT_EQ(q.send_raw("{\"execute\":\"qmp_capabilities\",\"arguments\":{\"enable\":[\"x\"]}}\n")
              .at("error")
              .at("desc"),
            "Parameter 'enable[0]' does not accept value 'x'");
  EXPECT_TRUE(
    q.send_raw("{\"execute\":\"qmp_capabilities\",\"arguments\":{\"enable\":[\"oob\"]}}\n")
      .as_object()
      .contains("return"));
  auto pause = q.send_raw("{\"exec-oob\":\"migrate-pause\",\"id\":\"p\"}\n");
  EXPECT_EQ(pause.at("id"), "p");
  EXPECT_EQ(pause.at("error").at("desc"),
            "migrate-pause is currently only supported during postcopy-active state")
    << "allow-oob commands run out of band";
  EXPECT_EQ(q.send_raw("{\"exec-oob\":\"query-status\",\"id\":2}\n").at("error").at("desc"),
            "The command query-status does not support OOB");
  q.execute("quit");
  EXPECT_EQ(agent->wait(10s), 0);
}

TEST_F(agent_fixture, sigterm_shuts_down_with_an_event) {
  auto agent = start_small_agent({});
  qmp_client q{qmp_path};
  q.negotiate();
  agent->signal(SIGTERM);
  auto ev = q.next_event(5s);
  ASSERT_TRUE(ev);
  EXPECT_EQ(ev->at("event"), "SHUTDOWN");
  EXPECT_EQ(ev->at("data").at("reason"), "host-signal");
  EXPECT_EQ(agent->wait(10s), 0);
}

TEST_F(agent_fixture, bad_command_lines_fail_with_a_message) {
  struct bad_case {
    std::vector<std::string> args;
    const char* fragment;
  };
  const std::vector<bad_case> cases = {
    {{"-m", "lots"}, "not a size"},
    {{"-drive", "file=/nonexistent/guest.img,format=raw"}, "Could not open"},
    {{"-object", "memory-backend-file,id=r,size=16M,mem-path=/nonexistent/ram", "-machine",
      "memory-backend=r", "-accel", "none"},
     "cannot open mem-path"},
    {{"-incoming", "carrier-pigeon:7"}, "unknown migration protocol"},
    {{"-frobnicate"}, "invalid option"},
  };
  for (const auto& c : cases) {
    auto agent = start_agent(c.args);
    EXPECT_EQ(agent->wait(10s), 1) << c.args[0];
    EXPECT_NE(agent->stderr_text().find(c.fragment), std::string::npos)
      << c.args[0] << ": " << agent->stderr_text();
  }
}
