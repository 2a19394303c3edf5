#include "tests/support/test_cluster.hpp"

#include <boost/json.hpp>
#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

namespace ferry::test {

namespace json = boost::json;
using namespace std::chrono_literals;

std::string test_cluster::start(const std::vector<std::string>& host_names,
                                const std::string& policy) {
  hosts = host_names;
  std::vector<std::string> pki{"/bin/bash",
                               std::string{FERRY_SOURCE_DIR} + "/deploy/pki/ferry-pki.sh",
                               dir.file("pki"), "--node", "orchestrator"};
  for (const auto& h : hosts)
    pki.insert(pki.end(), {"--node", h});
  if (auto r = run(pki); r.status != 0)
    return "ferry-pki.sh: " + r.output;
  // Below the kernel's ephemeral range (32768+), distinct per test process:
  // API port in 30000-31999, migration ports from 20000 in strides of 10 per
  // host.
  api_port = static_cast<uint16_t>(30000 + (::getpid() % 2000));
  auto port = static_cast<uint16_t>(20000 + (::getpid() % 30) * 10 * 32);
  for (const auto& h : hosts) {
    const std::string conf = dir.file(h + ".toml");
    std::ofstream{conf} << "host = \"" << h << "\"\n[control]\nlisten = \"127.0.0.1:0\"\n"
                        << "[tls]\nca = \"" << dir.file("pki/ca-cert.pem") << "\"\ncert = \""
                        << dir.file("pki/" + h + "-cert.pem") << "\"\nkey = \""
                        << dir.file("pki/" + h + "-key.pem") << "\"\n[paths]\nstate_dir = \""
                        << dir.file(h + "-state") << "\"\nrun_dir = \"" << run_dir(h)
                        << "\"\n[migration]\naddress = \"127.0.0.1\"\nport_min = " << port
                        << "\nport_max = " << port + 9 << "\n[metrics]\nlisten = \"127.0.0.1:0\"\n";
    port = static_cast<uint16_t>(port + 10);
    agents[h] = std::make_unique<process>(
      std::vector<std::string>{binary("agent/ferry-agent"), "--config", conf});
  }
  for (const auto& h : hosts)
    if (!wait_for_text(run_dir(h) + "/control.port", "\n", 20s) ||
        !wait_for_text(run_dir(h) + "/metrics.port", "\n", 20s))
      return h + " did not start: " + agents[h]->stderr_text();
  std::ofstream conf{dir.file("orchestrator.toml")};
  conf << "[http]\nlisten = \"127.0.0.1:" << api_port << "\"\n[journal]\npath = \""
       << journal_path() << "\"\n[tls]\nca = \"" << dir.file("pki/ca-cert.pem") << "\"\ncert = \""
       << dir.file("pki/orchestrator-cert.pem") << "\"\nkey = \""
       << dir.file("pki/orchestrator-key.pem") << "\"\n[policy]\n"
       << (policy.find("max_bandwidth") == std::string::npos ? "max_bandwidth = 1073741824\n" : "")
       << policy << "\n";
  for (const auto& h : hosts) {
    std::string p = read_file(run_dir(h) + "/control.port");
    p.erase(p.find_last_not_of('\n') + 1);
    conf << "[[agents]]\nname = \"" << h << "\"\naddress = \"127.0.0.1:" << p << "\"\n";
  }
  conf.close();
  return start_orchestrator();
}

std::string test_cluster::start_orchestrator() {
  orchestrator = std::make_unique<process>(std::vector<std::string>{
    binary("orchestrator/ferry-orchestrator"), "--config", dir.file("orchestrator.toml")});
  for (int i = 0; i < 200; ++i) {
    if (!orchestrator->running())
      break;
    auto r = ctl({"hosts", "-o", "json"});
    if (r.status == 0) {
      const auto all = json::parse(r.output);
      size_t up = 0;
      for (const auto& h : all.as_array())
        up += h.at("up").as_bool() ? 1 : 0;
      if (up == hosts.size())
        return {};
    }
    std::this_thread::sleep_for(100ms);
  }
  return "orchestrator did not connect to the agents: " + orchestrator->stderr_text();
}

uint16_t test_cluster::metrics_port(const std::string& host) const {
  return static_cast<uint16_t>(std::stoi(read_file(run_dir(host) + "/metrics.port")));
}

run_result test_cluster::ctl(std::vector<std::string> args) const {
  args.insert(args.begin(),
              {binary("tools/ferryctl"), "--server", "127.0.0.1:" + std::to_string(api_port)});
  return run(args);
}

std::map<std::string, std::vector<std::string>> test_cluster::placements() const {
  std::map<std::string, std::vector<std::string>> where;
  for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
    std::ifstream in{entry.path() / "cmdline"};
    std::string cmd((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::vector<std::string> argv;
    for (size_t pos = 0; pos < cmd.size();) {
      const size_t end = cmd.find('\0', pos);
      argv.push_back(cmd.substr(pos, end - pos));
      pos = end == std::string::npos ? cmd.size() : end + 1;
    }
    if (argv.size() < 3 || argv[1] != "vm")
      continue;
    std::string name;
    for (size_t i = 1; i + 1 < argv.size(); ++i)
      if (argv[i] == "-name")
        name = argv[i + 1];
    for (const auto& h : hosts)
      for (const auto& a : argv)
        if (a.find("unix:" + run_dir(h) + "/") == 0)
          where[name].push_back(h);
  }
  for (auto& [n, hs] : where)
    std::sort(hs.begin(), hs.end());
  // The orchestrator's inventory agrees once it has refreshed (every second).
  std::map<std::string, std::vector<std::string>> inventory;
  for (int i = 0; i < 30; ++i) {
    inventory.clear();
    auto r = ctl({"guests", "-o", "json"});
    EXPECT_EQ(r.status, 0) << r.output;
    const auto all = json::parse(r.output);
    for (const auto& g : all.as_array())
      inventory[std::string{g.at("name").as_string()}].push_back(
        std::string{g.at("host").as_string()});
    for (auto& [n, hs] : inventory)
      std::sort(hs.begin(), hs.end());
    if (inventory == where)
      break;
    std::this_thread::sleep_for(200ms);
  }
  EXPECT_EQ(inventory, where) << "the orchestrator's inventory disagrees with the hosts";
  return where;
}

std::string test_cluster::story() const {
  std::ostringstream out;
  if (orchestrator)
    out << "migrations: " << ctl({"migrations", "-o", "json"}).output << "\n"
        << "orchestrator stderr:\n"
        << orchestrator->stderr_text() << "\n";
  for (const auto& [h, a] : agents)
    out << h << " stderr:\n" << a->stderr_text() << "\n";
  return out.str();
}

} // namespace ferry::test
