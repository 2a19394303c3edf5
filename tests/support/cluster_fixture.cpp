#include "tests/support/cluster_fixture.hpp"

#include "tests/support/kvm_skip.hpp"
#include "tools/qmp/qmp_client.hpp"

#include <boost/json.hpp>

#include <chrono>
#include <cstdio>
#include <iostream>
#include <thread>

namespace ferry::test {

namespace json = boost::json;
using namespace std::chrono_literals;

const std::vector<std::string> host_names{"host-a", "host-b", "host-c"};

void cluster::SetUp() {
  auto img = run({binary("tools/ferry-testguest"), "image", image(), "--ram-top", "8M",
                  "--ws-pages", "128", "--report-every", "50"});
  ASSERT_EQ(img.status, 0) << img.output;
  auto err = c.start(host_names, policy());
  ASSERT_TRUE(err.empty()) << err;
}

void cluster::TearDown() {
  // A failed cluster test is only debuggable with the jobs' story.
  if (HasFailure())
    std::cerr << c.story();
}

void cluster::start_orchestrator() {
  auto err = c.start_orchestrator();
  ASSERT_TRUE(err.empty()) << err;
}

void cluster::create(const std::string& name, const std::string& host, int priority) {
  std::vector<std::string> args{
    "create", name,      "--host", host,         "--memory",
    "8M",     "--image", image(),  "--priority", std::to_string(priority)};
  // KVM where usable, else the -accel none dirtier playing the test guest.
  if (!kvm_unavailable_reason().empty())
    args.insert(args.end(), {"--accel", "none", "--dirty-rate", "20000"});
  auto r = ctl(args);
  ASSERT_EQ(r.status, 0) << r.output;
}

void cluster::wait_ready(const std::string& name, const std::string& host) {
  ASSERT_TRUE(wait_for_text(run_dir(host) + "/" + name + ".serial", "ready", 120s))
    << name << " did not boot";
}

void verify_guest_memory(const test_cluster& c, const std::string& name, const std::string& host,
                         uint64_t bytes) {
  qmp_tool::qmp_client q{c.run_dir(host) + "/" + name + ".qmp"};
  q.negotiate();
  // A COLO primary is "colo" for the moment a checkpoint holds it.
  auto status = q.execute("query-status");
  for (const auto until = std::chrono::steady_clock::now() + 5s;
       status.at("return").at("status") == "colo" && std::chrono::steady_clock::now() < until;
       std::this_thread::sleep_for(10ms))
    status = q.execute("query-status");
  EXPECT_EQ(status.at("return").at("status").as_string(), "running") << name << " on " << host;
  q.execute("stop");
  const std::string dump = c.dir.file(name + "-" + host + ".bin");
  auto r = q.execute("pmemsave", {{"val", 0}, {"size", bytes}, {"filename", dump}});
  ASSERT_TRUE(r.as_object().contains("return")) << json::serialize(r);
  auto v = run({binary("tools/ferry-verify"), dump});
  EXPECT_EQ(v.status, 0) << name << " on " << host << ": " << v.output;
  EXPECT_NE(v.output.find("(0 bad)"), std::string::npos)
    << name << " on " << host << ": " << v.output;
  q.execute("cont");
  std::remove(dump.c_str());
}

void cluster::verify_guest(const std::string& name, const std::string& host) {
  verify_guest_memory(c, name, host, 8u << 20);
}

} // namespace ferry::test
