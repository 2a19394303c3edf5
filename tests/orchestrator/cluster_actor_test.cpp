// The cluster actor under CAF's test coordinator: scripted host actors behind
// a scripted dialer (the seam where the TLS middleman dials real agents),
// real job actors and a real journal. The queue's limit holds a second move
// until the first ends; an evacuation's move that fails on one host is
// retried on another.

#include "orchestrator/cluster.hpp"
#include "orchestrator/migration_job.hpp"
#include "tests/support/coordinated_fixture.hpp"
#include "tests/support/scripted_host.hpp"

#include <caf/all.hpp>
#include <caf/scheduler/test_coordinator.hpp>

#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <tuple>

using namespace ferry;
using namespace ferry::test;

namespace {

// Actors are spawned with their inputs as arguments, not captured: CAF 0.17
// binds a null reference for a function spawned without any (UBSan).

// Answers the cluster's dial as the middleman would: the host on that port.
// The map is shared with the test, which replaces a host it restarts.
using host_ports = std::map<uint16_t, host_actor>;
caf::behavior scripted_dialer(caf::event_based_actor*, const std::shared_ptr<host_ports>& hosts) {
  return {
    [hosts](caf::connect_atom, const std::string&, uint16_t p) {
      return std::make_tuple(caf::node_id{}, caf::actor_cast<caf::strong_actor_ptr>(hosts->at(p)),
                             std::set<std::string>{});
    },
  };
}

// One API request; the answer (JSON text or "error: ...") lands in `out`.
template <class... Ts>
void api_client(caf::event_based_actor* self, const cluster_api& cluster,
                const std::shared_ptr<std::string>& out, Ts... xs) {
  self->request(cluster, caf::infinite, xs...)
    .then([out](const std::string& s) { *out = s; },
          [out](const caf::error& e) { *out = "error: " + caf::to_string(e); });
}

struct cluster_fixture : coordinated_fixture {
  std::map<std::string, std::shared_ptr<host_script>> scripts;
  std::shared_ptr<host_ports> by_port = std::make_shared<host_ports>();
  std::map<std::string, uint16_t> ports;
  cluster_api cluster;

  // The host's agent goes away (its link drops) / comes back at its port.
  void host_down(const std::string& name) {
    caf::anon_send_exit(by_port->at(ports.at(name)), caf::exit_reason::kill);
    sched->run();
  }
  void host_back(const std::string& name) {
    (*by_port)[ports.at(name)] = sys->spawn(scripted_host, scripts.at(name));
  }

  void SetUp() override {
    coordinated_fixture::SetUp();
    for (const char* h : {"host-a", "host-b", "host-c"}) {
      scripts[h] = std::make_shared<host_script>();
      scripts[h]->name = h;
    }
  }

  void TearDown() override {
    if (cluster)
      caf::anon_send_exit(cluster, caf::exit_reason::kill);
    sched->run();
  }

  void add_guest(const std::string& host, const std::string& name) {
    guest_info g;
    g.spec.name = name;
    g.spec.memory = 64u << 20;
    g.alive = true;
    scripts.at(host)->guests.push_back(g);
  }

  // The cluster, dialing host-a/b/c (ports 1, 2, 3) through the scripted
  // dialer, up and with its first inventory.
  void start(migration_policy policy) {
    orchestrator_config oc;
    oc.policy = policy;
    uint16_t port = 1;
    for (const auto& [name, script] : scripts) {
      if (script->identity.empty())
        script->identity = name;
      (*by_port)[port] = sys->spawn(scripted_host, script);
      ports[name] = port;
      oc.agents.push_back(agent_address{name, host_port{"127.0.0.1", port}});
      ++port;
    }
    auto dialer = sys->spawn(scripted_dialer, by_port);
    cluster = spawn_cluster(*sys, oc, log, dialer, scripted_identity);
    sched->run();
    tick();
  }

  // An API request to the cluster, answered as JSON text or "error: ...".
  template <class... Ts>
  std::string api(Ts... xs) {
    auto out = std::make_shared<std::string>();
    sys->spawn(api_client<Ts...>, cluster, out, xs...);
    sched->run();
    return *out;
  }

  std::map<int64_t, job_record> jobs() const {
    std::map<int64_t, job_record> out;
    for (const auto& j : log->jobs(false))
      out[j.id] = j;
    return out;
  }
};

} // namespace

TEST_F(cluster_fixture, the_queue_holds_a_second_move_until_the_first_ends) {
  add_guest("host-a", "vm1");
  add_guest("host-a", "vm2");
  migration_policy p;
  p.max_migrations = 1;
  start(p);
  const auto r1 = api(api_migrate_atom::value, std::string{"vm1"}, std::string{"host-b"});
  const auto r2 = api(api_migrate_atom::value, std::string{"vm2"}, std::string{"host-c"});
  ASSERT_EQ(r1.rfind("error", 0), std::string::npos) << r1;
  ASSERT_EQ(r2.rfind("error", 0), std::string::npos) << r2;
  tick(5);
  auto js = jobs();
  ASSERT_EQ(js.size(), 2U);
  EXPECT_EQ(js.at(1).state, job_state::running);
  EXPECT_EQ(js.at(2).state, job_state::pending) << "one migration at a time";
  scripts.at("host-a")->migrate_statuses = {"completed"};
  tick(20);
  js = jobs();
  EXPECT_EQ(js.at(1).state, job_state::succeeded) << js.at(1).error;
  EXPECT_EQ(js.at(2).state, job_state::succeeded) << js.at(2).error;
  // The second was scheduled only after the first had finished.
  size_t first_done = 0;
  size_t second_scheduled = 0;
  const auto ts = log->transitions();
  for (size_t i = 0; i < ts.size(); ++i) {
    if (ts[i].job == 1 && ts[i].to == job_state::succeeded)
      first_done = i;
    if (ts[i].job == 2 && ts[i].to == job_state::scheduling)
      second_scheduled = i;
  }
  EXPECT_GT(second_scheduled, first_done);
}

// Each finished move asks for one refresh at once; none of them may start
// another periodic one (each used to: a busy orchestrator asked every host
// for its inventory once a second per move it had finished).
TEST_F(cluster_fixture, finished_moves_leave_one_inventory_a_second) {
  for (const char* g : {"vm1", "vm2", "vm3", "vm4"})
    add_guest("host-a", g);
  start(migration_policy{});
  scripts.at("host-a")->migrate_statuses = {"active", "completed"};
  for (const char* g : {"vm1", "vm2", "vm3", "vm4"}) {
    const auto r = api(api_migrate_atom::value, std::string{g}, std::string{"host-b"});
    ASSERT_EQ(r.rfind("error", 0), std::string::npos) << r;
  }
  tick(20);
  for (const auto& [id, j] : jobs())
    ASSERT_EQ(j.state, job_state::succeeded) << j.guest << ": " << j.error;
  const uint64_t before = scripts.at("host-c")->inventories;
  tick(5);
  EXPECT_EQ(scripts.at("host-c")->inventories - before, 5U) << "one per refresh_interval";
}

TEST_F(cluster_fixture, an_evacuation_move_that_fails_is_retried_on_another_host) {
  add_guest("host-a", "vm1");
  scripts.at("host-b")->memory_total = 4ull << 30; // the first choice: most room
  scripts.at("host-b")->create_fails = true;
  scripts.at("host-a")->migrate_statuses = {"active", "completed"};
  start(migration_policy{});
  const auto r = api(api_evacuate_atom::value, std::string{"host-a"});
  ASSERT_EQ(r.rfind("error", 0), std::string::npos) << r;
  tick(30);
  const auto js = jobs();
  ASSERT_EQ(js.size(), 2U);
  EXPECT_EQ(js.at(1).target, "host-b");
  EXPECT_EQ(js.at(1).state, job_state::failed);
  EXPECT_EQ(js.at(2).target, "host-c");
  EXPECT_EQ(js.at(2).attempt, 2);
  EXPECT_EQ(js.at(2).state, job_state::succeeded) << js.at(2).error;
  const auto evacs = log->evacuations(false);
  ASSERT_EQ(evacs.size(), 1U);
  EXPECT_TRUE(evacs[0].finished);
  EXPECT_EQ(scripts.at("host-a")->destroyed, std::vector<std::string>{"vm1"});
}

// A guest still starting when the cluster's inventory refresh asks its host:
// the inventory lists it, then the create answers. One entry, on one host
// (two made `protect` refuse "on more than one host").
TEST_F(cluster_fixture, a_guest_listed_while_it_starts_is_known_once) {
  scripts.at("host-a")->hold_create = true;
  start(migration_policy{});
  auto out = std::make_shared<std::string>();
  sys->spawn(api_client<api_create_atom, std::string, std::string>, cluster, out,
             api_create_atom::value, std::string{"host-a"},
             std::string{R"({"name":"vm1","memory":67108864})"});
  sched->run();
  ASSERT_TRUE(out->empty()) << "the create is held: " << *out;
  // The next timeout only (the refresh; the create's own one is later): the
  // refresh lists vm1, still starting.
  sched->trigger_timeout();
  sched->run();
  caf::anon_send(by_port->at(ports.at("host-a")), capacity_atom::value); // releases the create
  sched->run();
  ASSERT_EQ(out->rfind("error", 0), std::string::npos) << *out;
  const auto guests = api(api_get_atom::value, std::string{"guests"});
  const auto first = guests.find(R"("name":"vm1")");
  ASSERT_NE(first, std::string::npos) << guests;
  EXPECT_EQ(guests.find(R"("name":"vm1")", first + 1), std::string::npos) << guests;
  const auto r = api(api_protect_atom::value, std::string{"vm1"}, std::string{"host-b"});
  EXPECT_EQ(r.find("more than one host"), std::string::npos) << r;
}

// A host is up only once its guests are known: an evacuation asked of a
// restarted orchestrator before host-a's first inventory came in would
// otherwise be planned from an empty list and end at once, moving nothing.
TEST_F(cluster_fixture, a_host_is_up_only_once_its_first_inventory_is_in) {
  add_guest("host-a", "vm1");
  scripts.at("host-a")->inventory_fails = true;
  start(migration_policy{});
  const auto hosts = api(api_get_atom::value, std::string{"hosts"});
  EXPECT_NE(hosts.find(R"("name":"host-a","up":false)"), std::string::npos) << hosts;
  EXPECT_NE(hosts.find("it gave no inventory"), std::string::npos) << hosts;
  const auto early = api(api_evacuate_atom::value, std::string{"host-a"});
  EXPECT_NE(early.find("host host-a is down"), std::string::npos) << early;
  EXPECT_TRUE(log->evacuations(false).empty()) << "nothing journaled for a host not yet known";
  scripts.at("host-a")->inventory_fails = false;
  tick(3);
  const auto again = api(api_get_atom::value, std::string{"hosts"});
  EXPECT_NE(again.find(R"("name":"host-a","up":true)"), std::string::npos) << again;
  EXPECT_EQ(again.find("it gave no inventory"), std::string::npos) << again;
  const auto r = api(api_evacuate_atom::value, std::string{"host-a"});
  EXPECT_NE(r.find(R"("guest":"vm1")"), std::string::npos) << r;
}

// Hosts coming up together are each listed once as they come up and once
// per refresh_interval after; each used to ask for a refresh of every host
// up by then (N hosts up: ~N² inventories at an orchestrator's start).
TEST_F(cluster_fixture, a_host_coming_up_is_listed_once) {
  add_guest("host-a", "vm1");
  start(migration_policy{}); // the hosts come up, then one refresh_interval
  for (const auto& [name, script] : scripts)
    EXPECT_EQ(script->inventories, 2U) << name << ": once up, once refreshed";
  const auto guests = api(api_get_atom::value, std::string{"guests"});
  EXPECT_NE(guests.find(R"("name":"vm1")"), std::string::npos) << guests;
}

// A host whose link stays up but whose agent stops answering the inventory
// is shown degraded after two refreshes and gets no new moves; it recovers
// when it answers again.
TEST_F(cluster_fixture, a_host_that_stops_answering_is_degraded_and_gets_no_moves) {
  add_guest("host-a", "vm1");
  scripts.at("host-b")->memory_total = 4ull << 30; // the first choice while healthy
  start(migration_policy{});
  scripts.at("host-b")->unreachable = true;
  tick(3);
  const auto hosts = api(api_get_atom::value, std::string{"hosts"});
  EXPECT_NE(hosts.find(R"("name":"host-b","up":true,"degraded":true)"), std::string::npos) << hosts;
  EXPECT_NE(hosts.find(R"("name":"host-c","up":true,"degraded":false)"), std::string::npos)
    << hosts;
  scripts.at("host-a")->migrate_statuses = {"active", "completed"};
  const auto r = api(api_migrate_atom::value, std::string{"vm1"}, std::string{});
  ASSERT_EQ(r.rfind("error", 0), std::string::npos) << r;
  tick(20);
  const auto js = jobs();
  ASSERT_EQ(js.size(), 1U);
  EXPECT_EQ(js.at(1).target, "host-c") << "a degraded host gets no new moves";
  EXPECT_EQ(js.at(1).state, job_state::succeeded) << js.at(1).error;
  scripts.at("host-b")->unreachable = false;
  tick(2);
  const auto again = api(api_get_atom::value, std::string{"hosts"});
  EXPECT_NE(again.find(R"("name":"host-b","up":true,"degraded":false)"), std::string::npos)
    << again;
}

// The peer at host-b's address proves it is host-c: TLS let it in (same
// CA), the identity check does not. host-b stays down with the reason and
// gets no moves; the others are up.
TEST_F(cluster_fixture, a_peer_that_proves_another_identity_is_refused) {
  add_guest("host-a", "vm1");
  scripts.at("host-b")->identity = "host-c";
  scripts.at("host-b")->memory_total = 4ull << 30; // it would be the first choice
  start(migration_policy{});
  const auto hosts = api(api_get_atom::value, std::string{"hosts"});
  EXPECT_NE(hosts.find(R"("name":"host-b","up":false)"), std::string::npos) << hosts;
  EXPECT_NE(hosts.find(R"(its certificate names host 'host-c', not host 'host-b')"),
            std::string::npos)
    << hosts;
  EXPECT_NE(hosts.find(R"("name":"host-c","up":true)"), std::string::npos) << hosts;
  EXPECT_TRUE(scripts.at("host-b")->qmp_seen.empty()) << "a refused peer is asked nothing";
  scripts.at("host-a")->migrate_statuses = {"active", "completed"};
  const auto r = api(api_migrate_atom::value, std::string{"vm1"}, std::string{});
  ASSERT_EQ(r.rfind("error", 0), std::string::npos) << r;
  tick(20);
  EXPECT_EQ(jobs().at(1).target, "host-c");
}

// An agent restart mid-evacuation: the move still pending off host-a waits
// for host-a to come back, then goes ahead; with a host that stays away it is
// cancelled after source_return_s, with the reason, and the evacuation ends.
TEST_F(cluster_fixture, pending_moves_off_a_host_that_went_down_wait_for_it_within_a_bound) {
  add_guest("host-a", "vm1");
  add_guest("host-a", "vm2");
  migration_policy p;
  p.max_migrations = 1;
  p.source_return_s = 1;
  start(p);
  ASSERT_EQ(api(api_evacuate_atom::value, std::string{"host-a"}).rfind("error", 0),
            std::string::npos);
  tick(5);
  auto js = jobs();
  ASSERT_EQ(js.size(), 2U);
  EXPECT_EQ(js.at(2).state, job_state::pending);
  host_down("host-a");
  tick(3);
  EXPECT_EQ(jobs().at(2).state, job_state::pending) << "it waits for host-a";
  host_back("host-a");
  scripts.at("host-a")->migrate_statuses = {"completed"};
  tick(40);
  js = jobs();
  EXPECT_EQ(js.at(2).state, job_state::succeeded) << js.at(2).error;
  // Now host-a goes away for good with a move pending (the one slot is
  // taken by a move off host-b that does not end).
  add_guest("host-a", "vm3");
  add_guest("host-b", "vm4");
  scripts.at("host-b")->migrate_statuses = {"active"};
  tick(2); // the inventory has them
  ASSERT_EQ(
    api(api_migrate_atom::value, std::string{"vm4"}, std::string{"host-c"}).rfind("error", 0),
    std::string::npos);
  tick(2);
  const auto r = api(api_migrate_atom::value, std::string{"vm3"}, std::string{"host-c"});
  ASSERT_EQ(r.rfind("error", 0), std::string::npos) << r;
  const auto id = jobs().rbegin()->first;
  host_down("host-a");
  scripts.at("host-a")->unreachable = true; // its reconnects fail too
  tick(2);
  EXPECT_EQ(jobs().at(id).state, job_state::pending) << "within the grace";
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));
  tick(3);
  EXPECT_EQ(jobs().at(id).state, job_state::cancelled);
  EXPECT_EQ(jobs().at(id).error, "host host-a did not come back within 1 s");
  scripts.at("host-b")->migrate_statuses = {"completed"}; // lets the last job end
  tick(20);
}

TEST_F(cluster_fixture, the_next_move_is_prepared_while_it_waits_and_migrates_on_its_slot) {
  add_guest("host-a", "vm1");
  add_guest("host-a", "vm2");
  migration_policy p;
  p.max_migrations = 1;
  start(p);
  api(api_migrate_atom::value, std::string{"vm1"}, std::string{"host-b"});
  api(api_migrate_atom::value, std::string{"vm2"}, std::string{"host-c"});
  tick(5);
  const auto& c = *scripts.at("host-c");
  EXPECT_EQ(jobs().at(2).state, job_state::pending);
  EXPECT_NE(std::find(c.qmp_seen.begin(), c.qmp_seen.end(), "vm2:migrate-incoming"),
            c.qmp_seen.end())
    << "the waiting move's target listens already";
  const auto& a = *scripts.at("host-a");
  EXPECT_EQ(std::find(a.qmp_seen.begin(), a.qmp_seen.end(), "vm2:migrate"), a.qmp_seen.end());
  scripts.at("host-a")->migrate_statuses = {"completed"};
  tick(20);
  const auto js = jobs();
  EXPECT_EQ(js.at(2).state, job_state::succeeded) << js.at(2).error;
  bool ahead = false;
  for (const auto& t : log->transitions())
    if (t.job == 2 && t.to == job_state::preparing_target)
      ahead = t.note.find("while waiting") != std::string::npos;
  EXPECT_TRUE(ahead);
}

TEST_F(cluster_fixture, cancelling_a_move_prepared_ahead_removes_its_target_only) {
  add_guest("host-a", "vm1");
  add_guest("host-a", "vm2");
  migration_policy p;
  p.max_migrations = 1;
  start(p);
  api(api_migrate_atom::value, std::string{"vm1"}, std::string{"host-b"});
  api(api_migrate_atom::value, std::string{"vm2"}, std::string{"host-c"});
  tick(5);
  ASSERT_EQ(scripts.at("host-c")->guests.size(), 1U) << "the staged target";
  const auto r = api(cancel_atom::value, int64_t{2});
  ASSERT_EQ(r.rfind("error", 0), std::string::npos) << r;
  tick(2);
  EXPECT_EQ(jobs().at(2).state, job_state::cancelled);
  EXPECT_EQ(scripts.at("host-c")->destroyed, std::vector<std::string>{"vm2"});
  EXPECT_TRUE(scripts.at("host-a")->destroyed.empty()) << "the source keeps both guests";
  EXPECT_EQ(jobs().at(1).state, job_state::running);
  scripts.at("host-a")->migrate_statuses = {"completed"}; // (jobs outlive the cluster)
  tick(20);
  EXPECT_EQ(jobs().at(1).state, job_state::succeeded);
  EXPECT_EQ(jobs().at(2).state, job_state::cancelled) << "a cancelled move stays cancelled";
}
