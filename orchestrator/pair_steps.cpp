// The COLO pair files' plumbing (pair_steps.hpp).
#include "orchestrator/pair_steps.hpp"

#include "common/error.hpp"
#include "common/log.hpp"
#include "orchestrator/orchestrator_error.hpp"

#include <algorithm>
#include <utility>

namespace ferry::cluster_detail::colo {

namespace {

std::string desc_of(const json::object& err) {
  const auto* d = err.if_contains("desc");
  return d != nullptr && d->is_string() ? std::string{d->as_string()} : "?";
}

} // namespace

void host_qmp(cluster_actor* self, const std::string& host, const std::string& guest,
              const std::string& command, const json::object& args, const answer& done,
              std::chrono::seconds timeout) {
  auto h = self->state.hosts.find(host);
  if (h == self->state.hosts.end() || !h->second.up) {
    done(make_orchestrator_error(orchestrator_errc::host_down, "host " + host + " is down"));
    return;
  }
  self->request(h->second.handle, timeout, qmp_atom::value, guest, command, json::serialize(args))
    .then(
      [done, command](const std::string& text) {
        boost::system::error_code ec;
        auto v = json::parse(text, ec);
        if (ec || !v.is_object()) {
          done(make_orchestrator_error(orchestrator_errc::invalid_request,
                                       command + ": malformed reply"));
          return;
        }
        const auto& o = v.as_object();
        if (const auto* e = o.if_contains("error"); e != nullptr && e->is_object()) {
          done(make_orchestrator_error(orchestrator_errc::invalid_request,
                                       command + ": " + desc_of(e->as_object())));
          return;
        }
        const auto* r = o.if_contains("return");
        done(r != nullptr ? *r : json::value{});
      },
      [done, command](const caf::error& err) {
        done(make_orchestrator_error(orchestrator_errc::host_down, command + ": " + describe(err)));
      });
}

void host_steps(cluster_actor* self, const std::string& host, const std::string& guest,
                const std::shared_ptr<std::vector<qmp_step>>& steps, size_t i,
                const std::function<void(const std::string&)>& done) {
  if (i == steps->size()) {
    done({});
    return;
  }
  const auto& s = (*steps)[i];
  host_qmp(self, host, guest, s.command, s.args,
           [self, host, guest, steps, i, done](const caf::expected<json::value>& r) {
             if (!r)
               done(describe(r.error()));
             else
               host_steps(self, host, guest, steps, i + 1, done);
           });
}

std::string status_of(const caf::expected<json::value>& r) {
  if (!r || !r->is_object())
    return {};
  const auto* s = r->as_object().if_contains("status");
  return s != nullptr && s->is_string() ? std::string{s->as_string()} : "none";
}

bool host_up(const cluster_state& st, const std::string& host) {
  auto h = st.hosts.find(host);
  return h != st.hosts.end() && h->second.up;
}

bool draining(const cluster_state& st, const std::string& host) {
  auto h = st.hosts.find(host);
  return h != st.hosts.end() && h->second.draining;
}

pair_entry* find_pair(cluster_actor* self, const std::string& guest, int64_t id) {
  auto it = self->state.pairs.find(guest);
  return it != self->state.pairs.end() && it->second.record.id == id ? &it->second : nullptr;
}

bool move_pair(cluster_actor* self, pair_entry& pe, pair_state to, const std::string& note) {
  if (auto ok = self->state.log->move_pair(pe.record, to, note); !ok) {
    log::error("COLO pair of '{}': {}", pe.record.guest, describe(ok.error()));
    return false;
  }
  log::info("COLO pair of '{}': {} -> {}: {}", pe.record.guest, to_string(pe.record.state),
            to_string(to), note);
  pe.since = clock_type::now();
  if (pe.record.state == pair_state::protected_)
    pe.unprotected_since = pe.since; // exposed from here until protected again
  pe.record.state = to;
  return true;
}

void retire_copy(cluster_actor* self, const std::string& host, const std::string& guest,
                 const std::function<void()>& then) {
  host_qmp(self, host, guest, "query-status", {},
           [self, host, guest, then](const caf::expected<json::value>& r) {
             const std::string run = status_of(r);
             auto h = self->state.hosts.find(host);
             if (run.empty() || run == "running" || h == self->state.hosts.end() || !h->second.up) {
               if (run == "running")
                 log::error("COLO pair of '{}': a running copy on {} is left alone", guest, host);
               then();
               return;
             }
             self->request(h->second.handle, request_timeout, destroy_atom::value, guest)
               .then([then](bool) { then(); }, [then](const caf::error&) { then(); });
           });
}

void lost_heartbeat(cluster_actor* self, pair_entry& pe, const std::string& host,
                    const std::string& why) {
  log::warn("COLO pair of '{}': x-colo-lost-heartbeat on {}: {}", pe.record.guest, host, why);
  pe.busy = true;
  const std::string guest = pe.record.guest;
  const int64_t id = pe.record.id;
  host_qmp(self, host, guest, "x-colo-lost-heartbeat", {},
           [self, guest, id](const caf::expected<json::value>&) {
             if (auto* p = find_pair(self, guest, id))
               p->busy = false; // the next round sees where it went
           });
}

json::object pair_json(const pair_entry& pe) {
  const auto& r = pe.record;
  json::object o{{"guest", r.guest},
                 {"primary", r.primary},
                 {"secondary", r.secondary},
                 {"state", std::string{to_string(r.state)}},
                 {"failovers", r.failovers}};
  if (!r.error.empty())
    o["error"] = r.error;
  if (r.state != pair_state::protected_)
    o["unprotected_s"] =
      std::chrono::duration<double>(clock_type::now() - pe.unprotected_since).count();
  return o;
}

void leave_unprotected(cluster_actor* self, const std::string& guest, int64_t id,
                       const std::string& why, bool back_off) {
  auto* pe = find_pair(self, guest, id);
  if (pe == nullptr)
    return;
  pe->busy = true;
  retire_copy(self, pe->record.secondary, guest, [self, guest, id, why, back_off] {
    auto* p = find_pair(self, guest, id);
    if (p == nullptr)
      return;
    p->busy = false;
    p->record.secondary.clear();
    p->record.error = why;
    p->primary_left.reset();
    (void) move_pair(self, *p, pair_state::unprotected, why);
    p->next_try = clock_type::now() + (back_off ? p->backoff : std::chrono::seconds(1));
    if (back_off)
      p->backoff = std::min(max_pair_backoff, p->backoff * 2);
  });
}

} // namespace ferry::cluster_detail::colo
