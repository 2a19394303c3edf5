#include "tests/support/test_cluster.hpp"

#include <boost/json.hpp>
#include <gtest/gtest.h>

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <thread>

namespace ferry::test {

namespace json = boost::json;
using namespace std::chrono_literals;

bool test_cluster::make_namespaces() {
  if (::geteuid() != 0 || std::getenv("FERRY_TEST_NO_NETNS") != nullptr)
    return false;
  for (const char* p : {"/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"})
    if (::access(p, X_OK) == 0) {
      ip_ = p;
      break;
    }
  if (ip_.empty())
    return false;
  const auto pid = static_cast<unsigned>(::getpid());
  const std::string tag = "ft" + std::to_string(pid);
  subnet_ = "10." + std::to_string(128 + (pid >> 8) % 100) + "." + std::to_string(pid & 255) + ".";
  migration_subnet_ =
    "10." + std::to_string(28 + (pid >> 8) % 100) + "." + std::to_string(pid & 255) + ".";
  if (run({ip_, "link", "add", tag + "-br", "type", "bridge"}).status != 0)
    return false;
  net_tag_ = tag; // from here on the destructor removes what exists
  auto ok = [](const run_result& r) { return r.status == 0; };
  // Migration streams have a network of their own (as many fleets do), so
  // a test can silence them alone.
  bool good = ok(run({ip_, "addr", "add", subnet_ + "1/24", "dev", tag + "-br"})) &&
              ok(run({ip_, "link", "set", tag + "-br", "up"})) &&
              ok(run({ip_, "link", "add", tag + "-mbr", "type", "bridge"})) &&
              ok(run({ip_, "link", "set", tag + "-mbr", "up"}));
  for (size_t i = 0; good && i < hosts.size(); ++i) {
    const std::string ns = tag + "-" + std::to_string(i);
    const std::string veth = tag + "-v" + std::to_string(i);
    good =
      ok(run({ip_, "netns", "add", ns})) &&
      ok(run({ip_, "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns})) &&
      ok(run({ip_, "link", "set", veth, "master", tag + "-br", "up"})) &&
      ok(run({ip_, "-n", ns, "addr", "add", address(hosts[i]) + "/24", "dev", "eth0"})) &&
      ok(run({ip_, "-n", ns, "link", "set", "eth0", "up"})) &&
      ok(run({ip_, "-n", ns, "link", "set", "lo", "up"})) &&
      ok(run({ip_, "link", "add", tag + "-m" + std::to_string(i), "type", "veth", "peer", "name",
              "eth1", "netns", ns})) &&
      ok(run({ip_, "link", "set", tag + "-m" + std::to_string(i), "master", tag + "-mbr", "up"})) &&
      ok(run({ip_, "-n", ns, "addr", "add", migration_address(hosts[i]) + "/24", "dev", "eth1"})) &&
      ok(run({ip_, "-n", ns, "link", "set", "eth1", "up"}));
  }
  return good;
}

std::string test_cluster::restart_agent(const std::string& host, int sig) {
  auto& agent = agents.at(host);
  const std::string conf = dir.file(host + ".toml");
  // The orchestrator dials the port the agent had: keep it.
  const std::string port = read_file(run_dir(host) + "/control.port");
  std::string text = read_file(conf);
  const std::string any = "[control]\nlisten = \"" + address(host) + ":0\"";
  if (const auto at = text.find(any); at != std::string::npos)
    text.replace(at, any.size(),
                 "[control]\nlisten = \"" + address(host) + ":" + port.substr(0, port.find('\n')) +
                   "\"");
  std::ofstream{conf} << text;
  agent->signal(sig);
  if (!agent->wait(10s))
    return host + "'s agent did not stop";
  std::remove((run_dir(host) + "/control.port").c_str());
  std::remove((run_dir(host) + "/metrics.port").c_str());
  agent = std::make_unique<process>(agent_argv_.at(host));
  if (!wait_for_text(run_dir(host) + "/control.port", "\n", 20s))
    return host + " did not start again: " + agent->stderr_text();
  return {};
}

void test_cluster::kill_guests(const std::string& host) const {
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator{run_dir(host), ec}) {
    if (e.path().extension() != ".guest")
      continue;
    try {
      const auto pid = json::parse(read_file(e.path().string())).at("pid").to_number<int>();
      if (pid > 1)
        ::kill(pid, SIGKILL);
    } catch (const std::exception&) {
    }
  }
  // And any guest its agent started but had not recorded yet (an agent
  // killed between the two): every process whose command line names the
  // host's run directory is one of its guests.
  const std::string mark = run_dir(host) + "/";
  for (const auto& e : std::filesystem::directory_iterator{"/proc", ec}) {
    const std::string pid = e.path().filename().string();
    if (pid.find_first_not_of("0123456789") != std::string::npos)
      continue;
    std::string cmdline;
    try {
      cmdline = read_file(e.path().string() + "/cmdline");
    } catch (const std::exception&) {
      continue; // it ended while we looked
    }
    std::replace(cmdline.begin(), cmdline.end(), '\0', ' ');
    if (cmdline.find(mark) != std::string::npos && cmdline.find(" vm ") != std::string::npos)
      ::kill(std::stoi(pid), SIGKILL);
  }
}

void test_cluster::kill_host(const std::string& host) {
  agents.at(host)->signal(SIGKILL);
  agents.at(host)->wait(5s);
  // A child the agent forked just before it died execs as a guest a moment
  // later (until then it looks like the agent): look again.
  for (int round = 0; round < 3; ++round) {
    kill_guests(host);
    std::this_thread::sleep_for(100ms);
  }
}

bool test_cluster::reset_migration_connections(const std::string& host) {
  const auto i = namespace_of(host);
  return i && run({ip_, "netns", "exec", net_tag_ + "-" + std::to_string(*i), "ss", "-K", "src",
                   migration_address(host)})
                  .status == 0;
}

std::optional<size_t> test_cluster::namespace_of(const std::string& host) const {
  const auto it = std::find(hosts.begin(), hosts.end(), host);
  if (net_tag_.empty() || it == hosts.end())
    return std::nullopt;
  return static_cast<size_t>(it - hosts.begin());
}

// `side`: "v" the control bridge's veth, "m" the migration bridge's.
bool test_cluster::set_veth(const std::string& host, const char* side, bool up) {
  const auto i = namespace_of(host);
  return i &&
         run({ip_, "link", "set", net_tag_ + "-" + side + std::to_string(*i), up ? "up" : "down"})
             .status == 0;
}

bool test_cluster::set_link(const std::string& host, bool up) {
  return set_veth(host, "v", up);
}

bool test_cluster::set_migration_link(const std::string& host, bool up) {
  return set_veth(host, "m", up);
}

test_cluster::~test_cluster() {
  // The processes end before the namespaces they live in go.
  orchestrator.reset();
  agents.clear();
  // Guests outlive their agents: end what the agents' records name.
  for (const auto& h : hosts)
    kill_guests(h);
  if (net_tag_.empty())
    return;
  for (size_t i = 0; i < hosts.size(); ++i)
    (void) run({ip_, "netns", "delete", net_tag_ + "-" + std::to_string(i)});
  (void) run({ip_, "link", "delete", net_tag_ + "-br"});
  (void) run({ip_, "link", "delete", net_tag_ + "-mbr"});
}

std::string test_cluster::migration_address(const std::string& host) const {
  if (net_tag_.empty())
    return "127.0.0.1";
  const auto at = std::find(hosts.begin(), hosts.end(), host);
  return migration_subnet_ + std::to_string(10 + (at - hosts.begin()));
}

std::string test_cluster::address(const std::string& host) const {
  if (net_tag_.empty())
    return "127.0.0.1";
  const auto at = std::find(hosts.begin(), hosts.end(), host);
  return subnet_ + std::to_string(10 + (at - hosts.begin()));
}

std::string test_cluster::start(const std::vector<std::string>& host_names,
                                const std::string& policy) {
  hosts = host_names;
  if (!make_namespaces() && !net_tag_.empty())
    return "could not set up network namespaces (set FERRY_TEST_NO_NETNS to use loopback)";
  std::printf("test cluster: %zu agents %s\n", hosts.size(),
              net_tag_.empty()
                ? "on loopback"
                : ("in network namespaces " + net_tag_ + "-*, " + subnet_ + "0/24").c_str());
  std::vector<std::string> pki{"/bin/bash",
                               std::string{FERRY_SOURCE_DIR} + "/deploy/pki/ferry-pki.sh",
                               "cluster", dir.file("pki")};
  for (const auto& h : hosts)
    pki.insert(pki.end(), {"--host", h});
  if (auto r = run(pki); r.status != 0)
    return "ferry-pki.sh: " + r.output;
  // Below the kernel's ephemeral range (32768+), distinct per test process:
  // API port in 30000-31999, migration ports from 20000 in strides of 10 per
  // host.
  api_port = static_cast<uint16_t>(30000 + (::getpid() % 2000));
  auto port = static_cast<uint16_t>(20000 + (::getpid() % 30) * 10 * 32);
  for (const auto& h : hosts) {
    const std::string conf = dir.file(h + ".toml");
    const std::string a = address(h);
    std::ofstream{conf} << "host = \"" << h << "\"\n[control]\nlisten = \"" << a << ":0\"\n"
                        << "[tls]\nca = \"" << dir.file("pki/orchestrator-ca.pem")
                        << "\"\ncert = \"" << dir.file("pki/" + h + "-cert.pem") << "\"\nkey = \""
                        << dir.file("pki/" + h + "-key.pem") << "\"\n[paths]\nstate_dir = \""
                        << dir.file(h + "-state") << "\"\nrun_dir = \"" << run_dir(h)
                        << "\"\nimages = [\"" << dir.path() << "\"]\n[migration]\nca = \""
                        << dir.file("pki/hosts-ca.pem") << "\"\naddress = \""
                        << migration_address(h) << "\"\nport_min = " << port
                        << "\nport_max = " << port + 9 << "\n[metrics]\nlisten = \"" << a
                        << ":0\"\n";
    port = static_cast<uint16_t>(port + 10);
    std::vector<std::string> argv{binary("agent/ferry-agent"), "--config", conf};
    if (!agent_env.empty()) {
      argv.insert(argv.begin(), agent_env.begin(), agent_env.end());
      argv.insert(argv.begin(), "/usr/bin/env");
    }
    if (!net_tag_.empty()) {
      const auto i = static_cast<size_t>(std::find(hosts.begin(), hosts.end(), h) - hosts.begin());
      // ip execs the agent: the process's pid is the agent's.
      argv.insert(argv.begin(), {ip_, "netns", "exec", net_tag_ + "-" + std::to_string(i)});
    }
    agent_argv_[h] = argv;
    agents[h] = std::make_unique<process>(argv);
  }
  for (const auto& h : hosts)
    if (!wait_for_text(run_dir(h) + "/control.port", "\n", 20s) ||
        !wait_for_text(run_dir(h) + "/metrics.port", "\n", 20s))
      return h + " did not start: " + agents[h]->stderr_text();
  // API tokens: random, one per role.
  const auto random_token = [] {
    std::ifstream urandom{"/dev/urandom", std::ios::binary};
    std::string t;
    for (int i = 0; i < 24; ++i)
      t += "0123456789abcdef"[static_cast<unsigned char>(urandom.get()) % 16];
    return t;
  };
  operator_token = "op-" + random_token() + random_token();
  viewer_token = "view-" + random_token() + random_token();
  {
    std::ofstream tokens{dir.file("api-tokens")};
    tokens << "operator test-operator " << operator_token << "\nviewer test-viewer " << viewer_token
           << "\n";
  }
  ::chmod(dir.file("api-tokens").c_str(), 0600);
  std::ofstream{operator_token_file()} << operator_token << "\n";
  std::ofstream{viewer_token_file()} << viewer_token << "\n";
  std::ofstream conf{dir.file("orchestrator.toml")};
  conf << "[http]\nlisten = \"127.0.0.1:" << api_port << "\"\ntokens = \"" << dir.file("api-tokens")
       << "\"\n[journal]\npath = \"" << journal_path() << "\"\n[tls]\nca = \""
       << dir.file("pki/hosts-ca.pem") << "\"\ncert = \"" << dir.file("pki/orchestrator-cert.pem")
       << "\"\nkey = \"" << dir.file("pki/orchestrator-key.pem") << "\"\n[policy]\n"
       << (policy.find("max_bandwidth") == std::string::npos ? "max_bandwidth = 1073741824\n" : "")
       << policy << "\n";
  for (const auto& h : hosts) {
    std::string p = read_file(run_dir(h) + "/control.port");
    p.erase(p.find_last_not_of('\n') + 1);
    conf << "[[agents]]\nname = \"" << h << "\"\naddress = \"" << address(h) << ":" << p << "\"\n";
  }
  conf.close();
  return start_orchestrator();
}

std::string test_cluster::start_orchestrator() {
  std::vector<std::string> argv{binary("orchestrator/ferry-orchestrator"), "--config",
                                dir.file("orchestrator.toml")};
  if (!orchestrator_env.empty()) {
    argv.insert(argv.begin(), orchestrator_env.begin(), orchestrator_env.end());
    argv.insert(argv.begin(), "/usr/bin/env");
  }
  orchestrator = std::make_unique<process>(argv);
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
  std::vector<std::string> argv{binary("tools/ferryctl"), "--server",
                                "127.0.0.1:" + std::to_string(api_port), "--token-file",
                                operator_token_file()};
  argv.insert(argv.end(), ctl_options.begin(), ctl_options.end());
  argv.insert(argv.end(), args.begin(), args.end());
  return run(argv);
}

std::map<std::string, std::vector<std::string>> test_cluster::placements() const {
  std::map<std::string, std::vector<std::string>> where;
  for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
    std::string cmd;
    try {
      // libstdc++ throws when the read fails: a process ending while we look.
      std::ifstream in{entry.path() / "cmdline"};
      cmd.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    } catch (const std::exception&) {
      continue;
    }
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
  for (const auto& [h, a] : agents) {
    out << h << " stderr:\n" << a->stderr_text() << "\n";
    // And what its guests said (RUN_DIR/NAME.log: each guest's stderr).
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator{run_dir(h), ec})
      if (e.path().extension() == ".log")
        out << h << "/" << e.path().filename().string() << ":\n"
            << read_file(e.path().string()) << "\n";
  }
  return out.str();
}

} // namespace ferry::test
