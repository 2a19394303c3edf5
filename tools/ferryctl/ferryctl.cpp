// ferryctl: the operator's CLI for a Ferry cluster (talks to
// ferry-orchestrator's HTTP/JSON API).
//
//   ferryctl [--server HOST:PORT] [--token-file PATH] [--ca FILE [--cert FILE --key FILE]]
//            [--server-name NAME] [--output table|json] COMMAND
//     hosts | guests | migrations
//     create NAME --host HOST --memory SIZE [--image IMG] [--accel kvm|none] [--priority N]
//            [--smp N] [--dirty-rate PAGES_PER_S] [--dirty-ring-size ENTRIES]
//     migrate GUEST [--to HOST] [--wait]
//     evacuate HOST [--wait]
//     cancel ID
//     protect GUEST [--secondary HOST]   a COLO pair: checkpoints to a secondary
//     unprotect GUEST                    the pair ends, the primary runs on
//     pairs                              COLO pairs and their state
//     snapshot GUEST TAG [--restore | --delete]   save (or restore, delete) a VM
//                                        snapshot on the guest's qcow2 disk
//     snapshots                          snapshot operations and how they ended
//     watch [ID ...]          live progress until the watched migrations end

#include "tools/ferryctl/http_client.hpp"

#include <CLI/CLI.hpp>
#include <boost/json.hpp>

#include <unistd.h>

#include <cctype>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <optional>
#include <set>
#include <thread>
#include <tuple>

namespace {

namespace json = boost::json;
using ferry::ctl::http_request;

struct options {
  std::string server = "127.0.0.1:47300";
  std::string token_file; // the API token (its first line)
  // HTTPS (docs/security.md): the orchestrator's CA, and a client certificate
  // (operator or viewer) unless a token is used.
  ferry::ctl::client_tls tls;
  std::string output = "table";
};

// The token in `path` (its first non-empty line, trimmed), or why not.
bool read_token(const std::string& path, std::string& token, std::string& why) {
  std::ifstream in{path};
  if (!in) {
    why = "cannot read the token file '" + path + "'";
    return false;
  }
  std::string line;
  while (std::getline(in, line)) {
    const auto b = line.find_first_not_of(" \t\r");
    if (b == std::string::npos)
      continue;
    token = line.substr(b, line.find_last_not_of(" \t\r") - b + 1);
    return true;
  }
  why = "the token file '" + path + "' is empty";
  return false;
}

int fail(const std::string& msg) {
  std::fprintf(stderr, "ferryctl: %s\n", msg.c_str());
  return 1;
}

// Runs a request; on success stores the JSON body. Returns an exit status.
int call(const options& o, const std::string& method, const std::string& target,
         const std::string& body, json::value& out) {
  auto hp = ferry::parse_host_port(o.server);
  if (!hp)
    return fail("--server '" + o.server + "' is not HOST:PORT");
  std::string auth;
  if (!o.token_file.empty()) {
    std::string token, why;
    if (!read_token(o.token_file, token, why))
      return fail(why);
    auth = "Bearer " + token;
  }
  std::optional<ferry::ctl::client_tls> tls;
  if (!o.tls.ca.empty())
    tls = o.tls;
  else if (!o.tls.cert.empty() || !o.tls.key.empty())
    return fail("--cert/--key need --ca (the CA that issued the orchestrator's certificate)");
  auto r = http_request(*hp, method, target, body, auth, tls);
  if (r.status == 0)
    return fail(r.body);
  try {
    out = json::parse(r.body);
  } catch (const std::exception&) {
    return fail("unreadable answer (HTTP " + std::to_string(r.status) + ")");
  }
  if (r.status >= 400) {
    const auto* e = out.is_object() ? out.as_object().if_contains("error") : nullptr;
    return fail(e != nullptr && e->is_string() ? std::string{e->as_string()}
                                               : "HTTP " + std::to_string(r.status));
  }
  return 0;
}

std::string str(const json::value& v) {
  if (v.is_string())
    return std::string{v.as_string()};
  if (v.is_null())
    return "-";
  return json::serialize(v);
}

// Any JSON number (mbps is fractional) as a double.
double num(const json::value* v) {
  return v != nullptr && v->is_number() ? v->to_number<double>() : 0;
}

void print_table(const json::value& rows, const std::vector<std::string>& cols) {
  for (const auto& c : cols)
    std::printf("%-18s", c.c_str());
  std::printf("\n");
  for (const auto& r : rows.as_array()) {
    for (const auto& c : cols) {
      const auto* v = r.as_object().if_contains(c);
      std::printf("%-18s", v != nullptr ? str(*v).c_str() : "-");
    }
    std::printf("\n");
  }
}

std::string human_bytes(double b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (b >= 1024 && u < 4) {
    b /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f %s", b, units[u]);
  return buf;
}

// One line per migration: a bar of transferred / (transferred + remaining),
// the rate, the pass (dirty-sync-count) and an ETA from remaining / rate.
std::string progress_line(const json::object& m) {
  const std::string state = str(m.at("state"));
  const auto* prog = m.if_contains("progress");
  const json::object* ram = nullptr;
  if (prog != nullptr && prog->is_object())
    if (const auto* r = prog->as_object().if_contains("ram"); r != nullptr && r->is_object())
      ram = &r->as_object();
  const double done = ram != nullptr ? num(ram->if_contains("transferred")) : 0;
  const double left = ram != nullptr ? num(ram->if_contains("remaining")) : 0;
  const double rate = ram != nullptr ? num(ram->if_contains("mbps")) * 1e6 / 8 : 0;
  const auto pass =
    static_cast<unsigned long long>(ram != nullptr ? num(ram->if_contains("dirty-sync-count")) : 0);
  double frac = done + left > 0 ? done / (done + left) : 0;
  if (state == "succeeded" || state == "completing")
    frac = 1;
  constexpr int width = 30;
  std::string bar(static_cast<size_t>(frac * width), '#');
  bar.resize(width, '.');
  char eta[32] = "-";
  if (rate > 0 && left > 0)
    std::snprintf(eta, sizeof eta, "%.0fs", left / rate);
  char line[512];
  std::snprintf(line, sizeof line,
                "%4s %-16s %-8s->%-8s [%s] %3.0f%% %10s %10s/s pass %-3llu ETA %-6s %s",
                str(m.at("id")).c_str(), str(m.at("guest")).c_str(), str(m.at("source")).c_str(),
                str(m.at("target")).c_str(), bar.c_str(), frac * 100, human_bytes(done).c_str(),
                human_bytes(rate).c_str(), pass, eta, state.c_str());
  return line;
}

bool final_state(const std::string& s) {
  return s == "succeeded" || s == "failed" || s == "cancelled";
}

// Polls the migrations until every watched one is final. Exit status 0 if
// all succeeded.
int watch(const options& o, const std::set<int64_t>& ids) {
  const bool tty = ::isatty(1) != 0 && o.output != "json";
  size_t drawn = 0;
  for (;;) {
    json::value all;
    if (int rc = call(o, "GET", "/api/v1/migrations", {}, all); rc != 0)
      return rc;
    std::vector<const json::object*> shown;
    bool done = true;
    bool ok = true;
    for (const auto& m : all.as_array()) {
      const auto& obj = m.as_object();
      const int64_t id = obj.at("id").to_number<int64_t>();
      if (!ids.empty() && ids.count(id) == 0)
        continue;
      shown.push_back(&obj);
      const std::string st = str(obj.at("state"));
      done = done && final_state(st);
      ok = ok && (st == "succeeded" || !final_state(st));
    }
    if (o.output == "json") {
      json::array a;
      for (const auto* m : shown)
        a.push_back(*m);
      std::cout << json::serialize(a) << std::endl;
    } else {
      if (tty && drawn > 0)
        std::printf("\033[%zuA", drawn);
      for (const auto* m : shown)
        std::printf("%s\033[K\n", progress_line(*m).c_str());
      drawn = shown.size();
      std::fflush(stdout);
    }
    if (done) {
      for (const auto* m : shown)
        if (str(m->at("state")) == "failed")
          std::fprintf(stderr, "ferryctl: migration %s of %s failed: %s\n",
                       str(m->at("id")).c_str(), str(m->at("guest")).c_str(),
                       str(m->at("error")).c_str());
      return ok ? 0 : 2;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(tty ? 250 : 1000));
  }
}

int do_migrate(const options& o, const std::string& guest, const std::string& to, bool wait) {
  json::value out;
  json::object body{{"guest", guest}};
  if (!to.empty())
    body["to"] = to;
  if (int rc = call(o, "POST", "/api/v1/migrations", json::serialize(body), out); rc != 0)
    return rc;
  const int64_t id = out.as_object().at("id").to_number<int64_t>();
  if (!wait) {
    if (o.output == "json")
      std::cout << json::serialize(out) << std::endl;
    else
      std::printf("migration %lld: %s %s -> %s\n", static_cast<long long>(id), guest.c_str(),
                  str(out.at("source")).c_str(), str(out.at("target")).c_str());
    return 0;
  }
  return watch(o, {id});
}

int do_evacuate(const options& o, const std::string& host, bool wait) {
  json::value out;
  if (int rc =
        call(o, "POST", "/api/v1/evacuations", json::serialize(json::object{{"host", host}}), out);
      rc != 0)
    return rc;
  std::set<int64_t> ids;
  for (const auto& m : out.at("migrations").as_array())
    if (const auto* id = m.as_object().if_contains("id"))
      ids.insert(id->to_number<int64_t>());
  if (!wait || ids.empty()) {
    std::cout << (o.output == "json" ? json::serialize(out)
                                     : "evacuation " + str(out.at("id")) + " of " + host + ": " +
                                         std::to_string(ids.size()) + " migrations")
              << std::endl;
    return 0;
  }
  return watch(o, ids);
}

struct create_args {
  std::string name, host, memory = "64M", image, accel = "kvm";
  int priority = 0, vcpus = 1;
  uint64_t dirty_rate = 0;
  uint32_t ring = 0;
};

int do_create(const options& o, const create_args& c) {
  json::value out;
  uint64_t unit = 1;
  std::string digits = c.memory;
  if (!digits.empty() && std::string{"KMGT"}.find(static_cast<char>(std::toupper(digits.back()))) !=
                           std::string::npos) {
    unit =
      uint64_t{1} << (10 *
                      (std::string{"BKMGT"}.find(static_cast<char>(std::toupper(digits.back())))));
    digits.pop_back();
  }
  uint64_t mem = 0;
  try {
    mem = std::stoull(digits) * unit;
  } catch (const std::exception&) {
    return fail("--memory '" + c.memory + "' is not a size");
  }
  json::object spec{{"name", c.name},
                    {"memory", mem},
                    {"accel", c.accel},
                    {"vcpus", c.vcpus},
                    {"priority", c.priority}};
  if (!c.image.empty())
    spec["drive"] = c.image;
  if (c.dirty_rate != 0)
    spec["dirty_rate"] = c.dirty_rate;
  if (c.ring != 0)
    spec["dirty_ring_size"] = c.ring;
  if (int rc = call(o, "POST", "/api/v1/guests",
                    json::serialize(json::object{{"host", c.host}, {"spec", spec}}), out);
      rc != 0)
    return rc;
  std::cout << json::serialize(out) << std::endl;
  return 0;
}

// Where the orchestrator is and how to prove who we are: flags, each with an
// environment variable as its default.
void add_connection_options(CLI::App& app, options& o) {
  if (const char* env = std::getenv("FERRY_ORCHESTRATOR"))
    o.server = env;
  app.add_option("--server", o.server, "orchestrator API HOST:PORT ($FERRY_ORCHESTRATOR)");
  if (const char* env = std::getenv("FERRY_TOKEN_FILE"))
    o.token_file = env;
  app.add_option("--token-file", o.token_file,
                 "file holding the API token ($FERRY_TOKEN_FILE; docs/security.md)");
  for (auto [flag, env, field, help] :
       {std::tuple{"--ca", "FERRY_CA", &o.tls.ca,
                   "HTTPS: the CA of the orchestrator's certificate ($FERRY_CA)"},
        std::tuple{"--cert", "FERRY_CERT", &o.tls.cert,
                   "HTTPS: this client's certificate, operator or viewer ($FERRY_CERT)"},
        std::tuple{"--key", "FERRY_KEY", &o.tls.key, "HTTPS: its private key ($FERRY_KEY)"}}) {
    if (const char* value = std::getenv(env))
      *field = value;
    app.add_option(flag, *field, help);
  }
  app.add_option("--server-name", o.tls.server_name,
                 "HTTPS: the name the orchestrator's certificate carries (default orchestrator)");
}

// protect (`on`) or unprotect GUEST: the pair as the orchestrator left it.
int do_protect(const options& o, const std::string& guest, const std::string& secondary, bool on) {
  json::value out;
  json::object body{{"guest", guest}};
  if (!secondary.empty())
    body["secondary"] = secondary;
  if (int rc = call(o, "POST", on ? "/api/v1/pairs" : "/api/v1/pairs/" + guest + "/unprotect",
                    on ? json::serialize(body) : "{}", out);
      rc != 0)
    return rc;
  if (o.output == "json")
    std::cout << json::serialize(out) << std::endl;
  else
    std::printf("%s: %s on %s, secondary %s\n", guest.c_str(), str(out.at("state")).c_str(),
                str(out.at("primary")).c_str(),
                out.at("secondary").as_string().empty() ? "none"
                                                        : str(out.at("secondary")).c_str());
  return 0;
}

// snapshot GUEST TAG: saved, restored or deleted on the guest's disk.
int do_snapshot(const options& o, const std::string& guest, const std::string& tag,
                const std::string& op) {
  json::value out;
  const json::object body{{"guest", guest}, {"tag", tag}, {"op", op}};
  if (int rc = call(o, "POST", "/api/v1/snapshots", json::serialize(body), out); rc != 0)
    return rc;
  if (o.output == "json")
    std::cout << json::serialize(out) << std::endl;
  else
    std::printf("%s: snapshot '%s' %s on %s\n", guest.c_str(), tag.c_str(),
                op == "save"      ? "saved"
                : op == "restore" ? "restored"
                                  : "deleted",
                str(out.at("host")).c_str());
  return 0;
}

// The commands that list what the orchestrator has: GET /api/v1/NAME, and
// the columns of its table.
struct listing {
  const char* name;
  const char* help;
  std::vector<std::string> columns;
};
const std::vector<listing> listings = {
  {"hosts",
   "hosts and their state",
   {"name", "up", "degraded", "draining", "guests", "memory_used", "memory_total", "refusal"}},
  {"guests", "guests and where they run", {"name", "host", "memory", "vcpus", "priority"}},
  {"migrations",
   "migrations and their state",
   {"id", "guest", "source", "target", "state", "error"}},
  {"pairs",
   "COLO pairs and their state",
   {"guest", "primary", "secondary", "state", "failovers", "error"}},
  {"snapshots",
   "snapshot operations and how they ended",
   {"id", "guest", "host", "op", "tag", "state", "error"}},
};

} // namespace

int run_cli(int argc, char** argv) {
  CLI::App app{"ferryctl: operate a Ferry cluster through ferry-orchestrator"};
  options o;
  add_connection_options(app, o);
  app.add_option("--output,-o", o.output, "table or json")->check(CLI::IsMember({"table", "json"}));
  app.require_subcommand(1);
  // Global options may follow the subcommand ("ferryctl hosts -o json").
  app.fallthrough();
  std::vector<std::pair<const listing*, CLI::App*>> lists;
  lists.reserve(listings.size());
  for (const auto& l : listings)
    lists.emplace_back(&l, app.add_subcommand(l.name, l.help));
  std::string guest, to, host;
  bool wait = false;
  auto* migrate = app.add_subcommand("migrate", "move a running guest to another host");
  migrate->add_option("guest", guest, "guest name")->required();
  migrate->add_option("--to", to, "target host (default: the one with most free memory)");
  migrate->add_flag("--wait", wait, "follow it until it ends");
  auto* evacuate = app.add_subcommand("evacuate", "move every guest off a host");
  evacuate->add_option("host", host, "host to drain")->required();
  evacuate->add_flag("--wait", wait, "follow the moves until they end");
  create_args c;
  auto* create = app.add_subcommand("create", "start a guest on a host");
  create->add_option("name", c.name, "guest name")->required();
  create->add_option("--host", c.host, "host")->required();
  create->add_option("--memory,-m", c.memory, "RAM (like 64M, 1G)");
  create->add_option("--image", c.image, "boot image on the host");
  create->add_option("--accel", c.accel, "kvm or none")->check(CLI::IsMember({"kvm", "none"}));
  create->add_option("--smp", c.vcpus, "vCPUs");
  create->add_option("--priority", c.priority, "evacuation priority (higher first)");
  create->add_option("--dirty-rate", c.dirty_rate,
                     "-accel none: pages the synthetic guest dirties per second (0: flat out)");
  create->add_option(
    "--dirty-ring-size", c.ring,
    "kvm: dirty ring entries per vCPU (0: dirty bitmap; a ring allows dirty limits)");
  int64_t cancel_id = 0;
  auto* cancel = app.add_subcommand("cancel", "cancel a migration");
  cancel->add_option("id", cancel_id, "migration id")->required();
  std::string secondary;
  auto* protect = app.add_subcommand("protect", "keep a guest's COLO secondary on another host");
  protect->add_option("guest", guest, "guest name")->required();
  protect->add_option("--secondary", secondary,
                      "secondary's host (default: the one with most free memory)");
  auto* unprotect = app.add_subcommand("unprotect", "end a guest's COLO pair (it runs on)");
  unprotect->add_option("guest", guest, "guest name")->required();
  std::string tag;
  bool restore = false, remove = false;
  auto* snapshot = app.add_subcommand("snapshot", "save a VM snapshot on a guest's qcow2 disk");
  snapshot->add_option("guest", guest, "guest name")->required();
  snapshot->add_option("tag", tag, "snapshot name")->required();
  auto* restore_flag = snapshot->add_flag("--restore", restore, "load it instead");
  snapshot->add_flag("--delete", remove, "delete it instead")->excludes(restore_flag);
  std::vector<int64_t> watch_ids;
  auto* watch_cmd = app.add_subcommand("watch", "live progress of migrations");
  watch_cmd->add_option("ids", watch_ids, "migration ids (default: all)");
  CLI11_PARSE(app, argc, argv);

  json::value out;
  auto show = [&](const std::vector<std::string>& cols) {
    if (o.output == "json" || !out.is_array())
      std::cout << json::serialize(out) << std::endl;
    else
      print_table(out, cols);
    return 0;
  };
  for (const auto& [l, sub] : lists)
    if (sub->parsed()) {
      if (int rc = call(o, "GET", std::string{"/api/v1/"} + l->name, {}, out); rc != 0)
        return rc;
      return show(l->columns);
    }
  if (migrate->parsed())
    return do_migrate(o, guest, to, wait);
  if (evacuate->parsed())
    return do_evacuate(o, host, wait);
  if (create->parsed())
    return do_create(o, c);
  if (cancel->parsed()) {
    if (int rc =
          call(o, "POST", "/api/v1/migrations/" + std::to_string(cancel_id) + "/cancel", "{}", out);
        rc != 0)
      return rc;
    std::cout << json::serialize(out) << std::endl;
    return 0;
  }
  if (protect->parsed() || unprotect->parsed())
    return do_protect(o, guest, secondary, protect->parsed());
  if (snapshot->parsed())
    return do_snapshot(o, guest, tag, restore ? "restore" : remove ? "delete" : "save");
  if (watch_cmd->parsed())
    return watch(o, {watch_ids.begin(), watch_ids.end()});
  return 0;
}

int main(int argc, char** argv) {
  // Nothing may escape as a crash: a malformed answer is an error message.
  try {
    return run_cli(argc, argv);
  } catch (const std::exception& e) {
    return fail(std::string{"unexpected answer: "} + e.what());
  }
}
