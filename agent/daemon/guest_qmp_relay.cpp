#include "agent/daemon/guest_qmp_relay.hpp"

#include "actors/host_interface.hpp"
#include "agent/qmp/qmp_connection.hpp"
#include "common/error.hpp"
#include "common/thread_name.hpp"

#include <caf/all.hpp>

#include <boost/json.hpp>

#include <algorithm>
#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

namespace ferry {

namespace {

namespace json = boost::json;

using connect_atom = caf::connect_atom;

// Who gets the guest's events. Shared by the relay, its event thread (which
// sends to them itself: one thread hop less between the guest and a
// migration job waiting for its MIGRATION event) and the exit hook, which
// runs after the relay's state is gone.
struct subscriber_list {
  std::mutex mtx;
  std::vector<caf::actor> actors;

  void send_all(const std::string& host, const std::string& guest, const std::string& event) {
    std::lock_guard lk{mtx};
    for (auto& s : actors)
      caf::anon_send(s, qmp_event_atom::value, host, guest, event);
  }
};

struct relay_state {
  std::string host;
  std::string guest;
  std::string socket;
  std::function<bool()> exited; // whether the guest's process has ended
  std::optional<qmp_connection> commands;
  std::shared_ptr<subscriber_list> subscribers = std::make_shared<subscriber_list>();
  std::shared_ptr<std::atomic<bool>> stop = std::make_shared<std::atomic<bool>>(false);
  std::thread events;

  relay_state() = default;
  relay_state(const relay_state&) = delete;
  relay_state& operator=(const relay_state&) = delete;
  ~relay_state() {
    stop->store(true);
    if (events.joinable())
      events.join();
  }
};

caf::error relay_error(const std::string& msg) {
  return make_ferry_error(errc::system_error, msg);
}

// Reads the guest's events on its own connection until told to stop or the
// guest goes away; each event goes to every subscriber.
void pump_events(const std::string& host, const std::string& socket, const std::string& guest,
                 const std::shared_ptr<subscriber_list>& subscribers,
                 const std::shared_ptr<std::atomic<bool>>& stop) {
  name_this_thread("qmpev/" + guest);
  auto c = qmp_connection::connect(socket, std::chrono::seconds(5));
  if (!c || !c->negotiate())
    return; // the guest is gone; the host actor notices through its process
  while (!stop->load() && !c->closed()) {
    auto e = c->next_event(std::chrono::milliseconds(200));
    if (e)
      subscribers->send_all(host, guest, json::serialize(*e));
  }
}

caf::behavior relay(caf::stateful_actor<relay_state>* self, std::string host, std::string guest,
                    std::string socket, std::function<bool()> exited) {
  name_this_thread("qmp/" + guest);
  self->state.host = std::move(host);
  self->state.guest = std::move(guest);
  self->state.socket = std::move(socket);
  self->state.exited = std::move(exited);
  // CAF delivers a down_msg to the down handler, never to the behavior: a
  // subscriber that ended (a finished migration job) is dropped here, or
  // every later event would still travel to it.
  self->set_down_handler([self](const caf::down_msg& dm) {
    auto& subs = *self->state.subscribers;
    std::lock_guard lk{subs.mtx};
    subs.actors.erase(std::remove_if(subs.actors.begin(), subs.actors.end(),
                                     [&](const caf::actor& a) { return a.address() == dm.source; }),
                      subs.actors.end());
  });
  self->attach_functor([subs = self->state.subscribers, host = self->state.host,
                        guest = self->state.guest] { subs->send_all(host, guest, std::string{}); });
  return {
    [self](connect_atom) -> caf::result<bool> {
      auto& st = self->state;
      auto c = qmp_connection::connect(st.socket, guest_monitor_wait, st.exited);
      if (c) {
        if (auto ok = c->negotiate(); !ok)
          c = ok.error();
      }
      if (!c)
        return relay_error("guest '" + st.guest +
                           "': QMP monitor not reachable: " + describe(c.error()));
      st.commands.emplace(std::move(*c));
      st.events = std::thread{pump_events, st.host, st.socket, st.guest, st.subscribers, st.stop};
      return true;
    },
    [self](qmp_atom, const std::string& command,
           const std::string& args) -> caf::result<std::string> {
      auto& st = self->state;
      if (!st.commands)
        return relay_error("guest '" + st.guest + "': not connected");
      json::object a;
      if (!args.empty()) {
        boost::system::error_code ec;
        auto v = json::parse(args, ec);
        if (ec)
          return make_ferry_error(errc::invalid_argument,
                                  "QMP arguments are not JSON: " + ec.message());
        if (!v.is_object())
          return make_ferry_error(errc::invalid_argument, "QMP arguments must be a JSON object");
        a = std::move(v.as_object());
      }
      auto reply = st.commands->execute(command, std::move(a));
      if (!reply)
        return relay_error("guest '" + st.guest + "': " + describe(reply.error()));
      return json::serialize(*reply);
    },
    [self](subscribe_atom, const caf::actor& who) {
      {
        std::lock_guard lk{self->state.subscribers->mtx};
        self->state.subscribers->actors.push_back(who);
      }
      self->monitor(who);
      return true;
    },
  };
}

} // namespace

caf::actor spawn_guest_qmp_relay(caf::actor_system& sys, std::string host, std::string guest,
                                 std::string qmp_socket, std::function<bool()> exited) {
  return sys.spawn<caf::detached>(relay, std::move(host), std::move(guest), std::move(qmp_socket),
                                  std::move(exited));
}

} // namespace ferry
