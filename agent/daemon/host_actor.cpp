#include "agent/daemon/host_actor.hpp"

#include "actors/identity_proof.hpp"
#include "agent/daemon/agent_metrics.hpp"
#include "agent/daemon/guest_process.hpp"
#include "agent/daemon/guest_qmp_relay.hpp"
#include "agent/daemon/guest_record.hpp"
#include "agent/daemon/relay_policy.hpp"
#include "common/error.hpp"
#include "common/log.hpp"
#include "common/thread_name.hpp"
#include "common/unique_fd.hpp"

#include <caf/all.hpp>

#include <boost/json.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <thread>

namespace ferry {

namespace {

using tick_atom = caf::atom_constant<caf::atom("tick")>;
using reap_atom = caf::atom_constant<caf::atom("reap")>;

// The published interface plus the actor's own timers and its guests' events.
using host_actor_impl =
  host_actor::extend<caf::reacts_to<tick_atom>, caf::reacts_to<reap_atom, std::string>,
                     caf::reacts_to<qmp_event_atom, std::string, std::string, std::string>,
                     caf::replies_to<metrics_atom>::with<std::string>>;

// How long a scrape waits for a guest's monitor before leaving it out.
constexpr auto metrics_query_timeout = std::chrono::seconds(2);

constexpr auto reap_interval = std::chrono::milliseconds(100);
// How long a guest gets to act on QMP quit before it is killed.
constexpr auto quit_grace = std::chrono::seconds(3);

struct pending_destroy {
  caf::typed_response_promise<bool> promise;
  std::chrono::steady_clock::time_point kill_at;
};

struct hosted_guest {
  guest_info info;
  std::shared_ptr<guest_process> process;
  caf::actor relay;
  std::vector<pending_destroy> destroys;
};

struct host_state {
  daemon_config cfg;
  std::string exe;
  std::map<std::string, hosted_guest> guests;
  std::set<uint16_t> ports_in_use;
};

uint64_t host_mem_total() {
  std::ifstream in{"/proc/meminfo"};
  std::string key;
  uint64_t kib = 0;
  while (in >> key >> kib) {
    if (key == "MemTotal:")
      return kib * 1024;
    in.ignore(256, '\n');
  }
  return 0;
}

// True if a listener could bind `port` on `address` now: the range may
// overlap the kernel's ephemeral ports, or another program may hold one.
bool bindable(const std::string& address, uint16_t port) {
  unique_fd fd{::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)};
  if (!fd)
    return false;
  const int one = 1;
  ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  if (::inet_pton(AF_INET, address.c_str(), &addr.sin_addr) != 1)
    return true; // not IPv4: leave it to migrate-incoming to report
  return ::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
}

std::optional<uint16_t> reserve_port(host_state& st) {
  for (uint32_t p = st.cfg.migration_port_min; p <= st.cfg.migration_port_max; ++p) {
    const auto port = static_cast<uint16_t>(p);
    if (st.ports_in_use.count(port) == 0 && bindable(st.cfg.migration_address, port)) {
      st.ports_in_use.insert(port);
      return port;
    }
  }
  return std::nullopt;
}

// True if `holder` (an event's data, a reply's return) says status "completed".
bool says_completed(const boost::json::value* holder) {
  const auto* status =
    holder != nullptr && holder->is_object() ? holder->as_object().if_contains("status") : nullptr;
  return status != nullptr && status->is_string() && status->as_string() == "completed";
}

// True for the event that ends an incoming migration successfully.
bool arrived(const std::string& event_text) {
  try {
    auto v = boost::json::parse(event_text);
    const auto& o = v.as_object();
    const auto* name = o.if_contains("event");
    if (name == nullptr || !name->is_string())
      return false;
    if (name->as_string() == "RESUME")
      return true;
    if (name->as_string() != "MIGRATION")
      return false;
    return says_completed(o.if_contains("data"));
  } catch (const std::exception&) {
    return false;
  }
}

host_capacity capacity_of(const host_state& st) {
  host_capacity c;
  c.host = st.cfg.host_name;
  c.migration_address = st.cfg.migration_address;
  c.memory_total = st.cfg.memory;
  for (const auto& [n, g] : st.guests)
    c.memory_used += g.info.spec.memory;
  c.guests = static_cast<uint32_t>(st.guests.size());
  return c;
}

// One scrape: every guest's answers to guest_metrics_queries, gathered from
// its relay without blocking the host actor.
struct metrics_scrape {
  agent_metrics_input in;
  size_t pending = 0;
  caf::typed_response_promise<std::string> promise;

  void answered(size_t guest, size_t query, const std::string& reply) {
    try {
      auto v = boost::json::parse(reply);
      const auto* ret = v.as_object().if_contains("return");
      if (ret != nullptr && ret->is_object()) {
        auto& g = in.guests[guest];
        boost::json::object* slots[] = {&g.status, &g.migrate, &g.parameters, &g.dirty_rate};
        *slots[query] = ret->as_object();
        if (query == 0)
          g.answered = true;
      }
    } catch (const std::exception&) {
      // A reply that is not JSON leaves the guest's figures out.
    }
    done_one();
  }

  void done_one() {
    if (--pending == 0)
      promise.deliver(render_agent_metrics(in));
  }
};

void forget(host_state& st, const std::string& name) {
  auto it = st.guests.find(name);
  if (it == st.guests.end())
    return;
  st.ports_in_use.erase(it->second.info.migration_port);
  remove_guest_record(st.cfg.run_dir, name);
  // Ending the relay tells the guest's subscribers it is gone.
  caf::anon_send_exit(it->second.relay, caf::exit_reason::user_shutdown);
  for (auto& d : it->second.destroys)
    d.promise.deliver(true);
  st.guests.erase(it);
}

using host_self = host_actor_impl::stateful_pointer<host_state>;

// What a restarted agent finds of itself: the record lets it adopt the
// process again.
void record(host_self self, const hosted_guest& g) {
  guest_record r{g.info, process_start_time(g.info.pid).value_or(0)};
  if (auto ok = write_guest_record(self->state.cfg.run_dir, r); !ok)
    log::warn("guest '{}': {} (a restarted agent will not find it)", g.info.spec.name,
              describe(ok.error()));
}

// Puts a guest process under this actor: its QMP relay, the host's own
// subscription to its events (an incoming guest becomes an ordinary one
// when its migration completes).
hosted_guest& host_guest(host_self self, guest_info info, guest_process proc) {
  auto& st = self->state;
  const std::string name = info.spec.name;
  auto process = std::make_shared<guest_process>(std::move(proc));
  auto relay =
    spawn_guest_qmp_relay(self->system(), st.cfg.host_name, name, info.qmp_socket,
                          [process] { return process->wait_exit(std::chrono::milliseconds(0)); });
  caf::anon_send(relay, subscribe_atom::value, caf::actor_cast<caf::actor>(self));
  auto& g = st.guests[name];
  g = hosted_guest{std::move(info), std::move(process), relay, {}};
  return g;
}

// An incoming guest whose migration completed is an ordinary guest: its
// port is free again and its record says so.
void mark_arrived(host_self self, const std::string& guest) {
  auto it = self->state.guests.find(guest);
  if (it == self->state.guests.end() || !it->second.info.spec.incoming)
    return;
  auto& info = it->second.info;
  info.spec.incoming = false;
  self->state.ports_in_use.erase(info.migration_port);
  info.migration_port = 0;
  record(self, it->second);
}

// True for a query-migrate reply whose status is completed.
bool migration_completed(const std::string& reply) {
  try {
    const auto v = boost::json::parse(reply);
    return says_completed(v.as_object().if_contains("return"));
  } catch (const std::exception&) {
    return false;
  }
}

// After a restart: every guest the last run left running comes back, with
// its relay, its reserved port and its figures; records of guests that
// ended meanwhile go. An incoming guest may have arrived while no agent
// listened for its event: it is asked.
void adopt_guests(host_self self) {
  auto& st = self->state;
  for (auto& r : read_guest_records(st.cfg.run_dir)) {
    auto proc = guest_process::adopt(r.info.pid, r.start_time);
    if (!proc) {
      log::info("guest '{}' ended while the agent was away ({})", r.info.spec.name,
                describe(proc.error()));
      remove_guest_record(st.cfg.run_dir, r.info.spec.name);
      continue;
    }
    r.info.alive = true;
    if (r.info.migration_port != 0)
      st.ports_in_use.insert(r.info.migration_port);
    log::info("guest '{}' (pid {}) adopted", r.info.spec.name, r.info.pid);
    const std::string name = r.info.spec.name;
    const auto& g = host_guest(self, std::move(r.info), std::move(*proc));
    // Its monitor is up already: the relay connects now.
    self->request(g.relay, host_create_wait, caf::connect_atom_v)
      .then(
        [self, name, relay = g.relay, incoming = g.info.spec.incoming](bool) {
          if (!incoming)
            return;
          self
            ->request(relay, host_create_wait, qmp_atom::value, std::string{"query-migrate"},
                      std::string{})
            .then(
              [self, name](const std::string& reply) {
                if (migration_completed(reply)) {
                  log::info("guest '{}' arrived while the agent was away", name);
                  mark_arrived(self, name);
                }
              },
              [](const caf::error&) {});
        },
        [name](const caf::error& err) {
          log::warn("guest '{}': its QMP monitor does not answer: {}", name, caf::to_string(err));
        });
  }
}

// Starts a guest process after checking its spec and the host's room; the
// answer waits until its QMP monitor is up.
caf::result<guest_info> create_guest(host_self self, guest_spec spec) {
  auto& st = self->state;
  if (auto ok = check_guest_spec(spec); !ok)
    return ok.error();
  auto confined = confine_guest_paths(std::move(spec), st.cfg.guest_paths);
  if (!confined) {
    log::warn("refused a guest: {}", describe(confined.error()));
    return confined.error();
  }
  spec = std::move(*confined);
  if (st.guests.count(spec.name) != 0)
    return make_ferry_error(errc::invalid_argument,
                            "guest '" + spec.name + "' already exists on " + st.cfg.host_name);
  uint64_t used = 0;
  for (auto& [n, g] : st.guests)
    used += g.info.spec.memory;
  if (used + spec.memory > st.cfg.memory)
    return make_ferry_error(errc::invalid_argument,
                            "host " + st.cfg.host_name + " has " +
                              std::to_string((st.cfg.memory - used) >> 20) + " MiB free, guest '" +
                              spec.name + "' needs " + std::to_string(spec.memory >> 20) + " MiB");
  guest_info info;
  if (spec.incoming) {
    auto port = reserve_port(st);
    if (!port)
      return make_ferry_error(errc::invalid_argument,
                              "host " + st.cfg.host_name + ": no free migration port");
    info.migration_port = *port;
  }
  auto proc = guest_process::spawn(st.exe, spec, st.cfg.run_dir, st.cfg.migration_tls_dir);
  if (!proc) {
    st.ports_in_use.erase(info.migration_port);
    return proc.error();
  }
  info.spec = std::move(spec);
  info.pid = proc->pid();
  info.qmp_socket = qmp_socket_path(st.cfg.run_dir, info.spec.name);
  info.alive = true;
  const std::string name = info.spec.name;
  const auto& hosted = host_guest(self, info, std::move(*proc));
  record(self, hosted);
  auto relay = hosted.relay;
  auto rp = self->make_response_promise<guest_info>();
  self->request(relay, host_create_wait, caf::connect_atom_v)
    .then([rp, info](bool) mutable { rp.deliver(info); },
          [self, rp, name](caf::error& err) mutable {
            // A guest whose monitor never answered is no use: end it, and
            // say what it printed (why it did not start, as libvirt does).
            if (auto it = self->state.guests.find(name); it != self->state.guests.end())
              it->second.process->kill();
            const auto said = guest_log_tail(self->state.cfg.run_dir, name);
            if (said.empty())
              rp.deliver(std::move(err));
            else
              rp.deliver(make_ferry_error(errc::system_error,
                                          "guest '" + name + "' did not start: " + said));
          });
  return rp;
}

// Every guest's QMP figures, gathered without blocking, as /metrics text.
caf::result<std::string> scrape_metrics(host_self self) {
  auto scrape = std::make_shared<metrics_scrape>();
  scrape->in.capacity = capacity_of(self->state);
  constexpr size_t queries = std::size(guest_metrics_queries);
  std::vector<caf::actor> relays;
  for (const auto& [name, g] : self->state.guests) {
    scrape->in.guests.push_back(guest_metrics_input{g.info, false, {}, {}, {}, {}});
    relays.push_back(g.relay);
  }
  if (relays.empty())
    return render_agent_metrics(scrape->in);
  scrape->pending = relays.size() * queries;
  scrape->promise = self->make_response_promise<std::string>();
  for (size_t i = 0; i < relays.size(); ++i)
    for (size_t q = 0; q < queries; ++q)
      self
        ->request(relays[i], metrics_query_timeout, qmp_atom::value,
                  std::string{guest_metrics_queries[q]}, std::string{})
        .then([scrape, i, q](const std::string& reply) { scrape->answered(i, q, reply); },
              [scrape](const caf::error&) { scrape->done_one(); });
  return scrape->promise;
}

// Reaps ended guests and kills those whose quit grace ran out.
void reap(host_self self) {
  auto& st = self->state;
  const auto now = std::chrono::steady_clock::now();
  std::vector<std::string> ended;
  for (auto& [name, g] : st.guests) {
    if (g.process->try_reap()) {
      ended.push_back(name);
      continue;
    }
    for (auto& d : g.destroys)
      if (now >= d.kill_at)
        g.process->kill();
  }
  for (auto& name : ended)
    forget(st, name);
  self->delayed_send(self, reap_interval, tick_atom::value);
}

// A guest that acknowledged quit is reaped the moment its process ends: its
// caller (a migration retiring its source) should not wait for the
// reaper's next round. A thread waits on the process's pidfd (actors do not
// block); past the grace, the reaper's kill ends the wait. It holds the
// actor weakly: an agent stopping meanwhile is not kept alive, nor written
// to once gone.
void watch_exit(host_self self, const std::string& name,
                const std::shared_ptr<guest_process>& process) {
  std::thread{[host = self->address(), name, process] {
    name_this_thread("exit/" + name);
    if (!process->wait_exit(quit_grace + reap_interval * 2))
      return;
    if (auto me = caf::actor_cast<caf::actor>(host))
      caf::anon_send(me, reap_atom::value, name);
  }}.detach();
}

host_actor_impl::behavior_type host(host_actor_impl::stateful_pointer<host_state> self,
                                    daemon_config cfg, std::string exe) {
  self->state.cfg = std::move(cfg);
  self->state.exe = std::move(exe);
  if (self->state.cfg.memory == 0)
    self->state.cfg.memory = host_mem_total();
  adopt_guests(self);
  self->send(self, tick_atom::value);
  // The agent stopping (restart, upgrade) leaves its guests running: the
  // next run adopts them. Only the relays end.
  self->set_exit_handler([self](const caf::exit_msg& msg) {
    for (auto& [name, g] : self->state.guests)
      caf::anon_send_exit(g.relay, caf::exit_reason::user_shutdown);
    self->quit(msg.reason);
  });
  return {
    [self](create_atom, guest_spec spec) { return create_guest(self, std::move(spec)); },
    [self](destroy_atom, const std::string& name) -> caf::result<bool> {
      auto it = self->state.guests.find(name);
      if (it == self->state.guests.end())
        return make_ferry_error(errc::invalid_argument,
                                "no guest '" + name + "' on " + self->state.cfg.host_name);
      auto rp = self->make_response_promise<bool>();
      it->second.destroys.push_back({rp, std::chrono::steady_clock::now() + quit_grace});
      // Ask politely; the reaper kills it if it has not gone after the grace.
      self
        ->request(it->second.relay, std::chrono::seconds(60), qmp_atom::value, std::string{"quit"},
                  std::string{})
        .then([self, name, process = it->second.process](
                const std::string&) { watch_exit(self, name, process); },
              [](const caf::error&) {});
      return rp;
    },
    [self](list_atom) {
      std::vector<guest_info> out;
      for (auto& [n, g] : self->state.guests)
        out.push_back(g.info);
      return out;
    },
    [self](capacity_atom) { return capacity_of(self->state); },
    [self](metrics_atom) { return scrape_metrics(self); },
    [self](qmp_atom, const std::string& guest, const std::string& command,
           const std::string& args) -> caf::result<std::string> {
      auto it = self->state.guests.find(guest);
      if (it == self->state.guests.end())
        return make_ferry_error(errc::invalid_argument,
                                "no guest '" + guest + "' on " + self->state.cfg.host_name);
      if (auto why = relay_refusal(command, args)) {
        log::warn("refused QMP '{}' for guest '{}': {}", command, guest, *why);
        return relay_refusal_reply(*why);
      }
      auto rp = self->make_response_promise<std::string>();
      self->request(it->second.relay, std::chrono::seconds(60), qmp_atom::value, command, args)
        .then([rp](std::string& reply) mutable { rp.deliver(std::move(reply)); },
              [rp](caf::error& err) mutable { rp.deliver(std::move(err)); });
      return rp;
    },
    [self](subscribe_atom, const std::string& guest, const caf::actor& who) -> caf::result<bool> {
      auto it = self->state.guests.find(guest);
      if (it == self->state.guests.end())
        return make_ferry_error(errc::invalid_argument,
                                "no guest '" + guest + "' on " + self->state.cfg.host_name);
      caf::anon_send(it->second.relay, subscribe_atom::value, who);
      return true;
    },
    [self](qmp_event_atom, const std::string&, const std::string& guest, const std::string& event) {
      if (!event.empty() && arrived(event))
        mark_arrived(self, guest);
    },
    [self](tick_atom) { reap(self); },
    [self](reap_atom, const std::string& name) {
      auto it = self->state.guests.find(name);
      if (it != self->state.guests.end() && it->second.process->try_reap())
        forget(self->state, name);
    },
    [self](identify_atom, const std::string& challenge) -> caf::result<std::string, std::string> {
      auto p = identity::prove(self->state.cfg.tls, challenge);
      if (!p)
        return p.error();
      return {p->cert_pem, p->signature};
    },
  };
}

} // namespace

host_actor spawn_host_actor(caf::actor_system& sys, daemon_config cfg, std::string exe) {
  return caf::actor_cast<host_actor>(sys.spawn(host, std::move(cfg), std::move(exe)));
}

} // namespace ferry
