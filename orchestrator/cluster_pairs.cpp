// COLO pairs, tended by the cluster actor every refresh (docs/orchestrator.md,
// "COLO pairs"): each pair's sides are asked how they stand and the pair
// moves on by its table (pair_state): a secondary that took over is the
// guest now (failover: the old copy retired, protection made again on a
// host the policy picks); a primary whose host has been out of reach past
// the fence timeout has its secondary promoted; a primary that fenced
// itself or lost its secondary is told to run on alone; an evacuation
// promotes the secondary of a primary on the draining host. Each transition
// is journaled before it is acted on, and no copy that runs is destroyed.
#include "orchestrator/pair_steps.hpp"

#include "common/log.hpp"

#include <algorithm>
#include <memory>
#include <set>

namespace ferry::cluster_detail {

namespace {

using namespace colo;

// The secondary runs the guest now: it is the primary; the old copy goes
// where it can, and protection is made again.
void fail_over(cluster_actor* self, pair_entry& pe, const std::string& why) {
  const std::string old = pe.record.primary;
  pe.record.primary = pe.record.secondary;
  pe.record.secondary.clear();
  pe.record.error = why;
  ++pe.record.failovers;
  if (!move_pair(self, pe, pair_state::failing_over,
                 why + "; the guest runs on " + pe.record.primary))
    return;
  ++self->state.colo_failovers;
  pe.busy = true;
  const std::string guest = pe.record.guest;
  const int64_t id = pe.record.id;
  auto done = [self, guest, id, old] {
    auto* p = find_pair(self, guest, id);
    if (p == nullptr)
      return;
    p->busy = false;
    (void) move_pair(self, *p, pair_state::unprotected,
                     "runs on " + p->record.primary +
                       (host_up(self->state, old) ? "" : "; " + old + " out of reach"));
    p->next_try = clock_type::now();
    p->backoff = std::chrono::seconds(2);
  };
  if (host_up(self->state, old))
    retire_copy(self, old, guest, done);
  else
    done();
}

// Both sides in COLO, until one is lost. `prim`/`sec`: their migration
// statuses ("" out of reach); `fenced`: the primary holds its guest because
// its secondary went silent.
void judge_protected(cluster_actor* self, pair_entry& pe, const std::string& prim, bool fenced,
                     const std::string& sec) {
  auto& st = self->state;
  const auto& r = pe.record;
  const auto now = clock_type::now();
  // Out of reach for longer than a fenced primary needs to have paused
  // (and than a restarted orchestrator needs to reach its hosts).
  const auto gone = [&](const std::string& host) {
    return !host_up(st, host) && now - st.hosts.at(host).down_since >=
                                   std::chrono::milliseconds(colo_fence_ms) + fence_margin;
  };
  if (sec == "completed") {
    fail_over(self, pe, "the secondary on " + r.secondary + " took over");
  } else if (prim == "colo" && fenced) {
    lost_heartbeat(self, pe, r.primary, "the primary fenced itself: its secondary went silent");
  } else if (sec == "colo" && gone(r.primary)) {
    lost_heartbeat(self, pe, r.secondary,
                   "host " + r.primary + " out of reach past the fence timeout");
  } else if (prim == "colo" && gone(r.secondary)) {
    lost_heartbeat(self, pe, r.primary, "host " + r.secondary + " out of reach");
  } else if (!prim.empty() && prim != "colo") {
    if (sec != "colo" || (pe.primary_left && now - *pe.primary_left >= secondary_grace))
      leave_unprotected(self, r.guest, r.id,
                        "COLO ended on the primary (" + prim + "); it runs alone", false);
    else if (!pe.primary_left)
      pe.primary_left = now;
  } else if (prim == "colo" && sec == "colo" && draining(st, r.primary)) {
    // Evacuation: the secondary already holds the guest — promoting it is
    // the move (the primary hears it and stops), then protection is made
    // again on a host not draining.
    lost_heartbeat(self, pe, r.secondary, "host " + r.primary + " is being evacuated");
  } else if (prim == "colo" && sec == "colo" && draining(st, r.secondary)) {
    lost_heartbeat(self, pe, r.primary,
                   "the secondary's host " + r.secondary +
                     " is being evacuated: protection moves elsewhere");
  }
}

// Protecting: the attempt under way until both sides say colo.
void judge_protecting(cluster_actor* self, pair_entry& pe, const std::string& prim,
                      const std::string& sec) {
  if (draining(self->state, pe.record.secondary)) {
    protect_failed(self, pe.record.guest, pe.record.id,
                   "the secondary's host " + pe.record.secondary + " is being evacuated");
  } else if (prim == "colo" && sec == "colo") {
    pe.backoff = std::chrono::seconds(2);
    pe.record.error.clear();
    (void) move_pair(self, pe, pair_state::protected_,
                     "checkpoints flow to " + pe.record.secondary);
  } else if (prim == "failed" || sec == "failed") {
    protect_failed(self, pe.record.guest, pe.record.id,
                   std::string{"the first copy failed on the "} +
                     (prim == "failed" ? "primary" : "secondary"));
  } else if (clock_type::now() - pe.since > protect_deadline) {
    protect_failed(self, pe.record.guest, pe.record.id, "not in COLO within 120 s");
  }
}

// Ferry's word in a primary's query-migrate that it fenced itself (its run
// state "colo" alone would also cover a checkpoint's pause).
bool fenced_in(const caf::expected<json::value>& r) {
  if (!r || !r->is_object())
    return false;
  const auto* colo = r->as_object().if_contains("x-ferry-colo");
  const auto* f =
    colo != nullptr && colo->is_object() ? colo->as_object().if_contains("fenced") : nullptr;
  return f != nullptr && f->is_bool() && f->as_bool();
}

// Asks both sides how they stand, then judges the pair.
void poll_pair(cluster_actor* self, pair_entry& pe) {
  struct round {
    std::string prim, sec;
    bool fenced = false;
    int left = 2;
  };
  auto rd = std::make_shared<round>();
  pe.busy = true;
  const std::string guest = pe.record.guest;
  const int64_t id = pe.record.id;
  auto answered = [self, guest, id, rd] {
    if (--rd->left != 0)
      return;
    auto* p = find_pair(self, guest, id);
    if (p == nullptr)
      return;
    p->busy = false;
    if (p->record.state == pair_state::protected_)
      judge_protected(self, *p, rd->prim, rd->fenced, rd->sec);
    else
      judge_protecting(self, *p, rd->prim, rd->sec);
  };
  host_qmp(
    self, pe.record.primary, guest, "query-migrate", {},
    [rd, answered](const caf::expected<json::value>& r) {
      rd->prim = status_of(r);
      rd->fenced = fenced_in(r);
      answered();
    },
    status_timeout);
  host_qmp(
    self, pe.record.secondary, guest, "query-migrate", {},
    [rd, answered](const caf::expected<json::value>& r) {
      rd->sec = status_of(r);
      answered();
    },
    status_timeout);
}

// Unprotected: a new secondary on the host the policy picks (most free
// memory, not the primary's, none that still holds a copy of the guest).
void re_protect(cluster_actor* self, pair_entry& pe) {
  auto& st = self->state;
  const auto& r = pe.record;
  if (!host_up(st, r.primary) || clock_type::now() < pe.next_try)
    return;
  uint64_t memory = 0;
  std::set<std::string> exclude;
  for (const auto& [name, h] : st.hosts)
    for (const auto& g : h.guests)
      if (g.spec.name == r.guest) {
        exclude.insert(name);
        memory = g.spec.memory;
      }
  auto pick = pick_target(st, r.primary, memory, exclude);
  if (!pick) {
    pe.record.error = "no host can take a secondary";
    pe.next_try = clock_type::now() + pe.backoff;
    pe.backoff = std::min(max_pair_backoff, pe.backoff * 2);
    return;
  }
  pe.record.secondary = *pick;
  if (!move_pair(self, pe, pair_state::re_protecting, "a secondary on " + *pick))
    return;
  start_protect(self, pe);
}

// Copies of a pair's guest on hosts that are neither of its sides (an old
// primary whose host came back): they go, unless one runs.
void retire_strays(cluster_actor* self, const pair_entry& pe) {
  auto& st = self->state;
  for (auto& [name, h] : st.hosts) {
    if (!h.up || name == pe.record.primary || name == pe.record.secondary ||
        h.sweeping.count(pe.record.guest) != 0)
      continue;
    const bool holds = std::any_of(h.guests.begin(), h.guests.end(), [&](const guest_info& g) {
      return g.spec.name == pe.record.guest;
    });
    if (!holds)
      continue;
    h.sweeping.insert(pe.record.guest);
    log::warn("COLO pair of '{}': retiring its stale copy on {}", pe.record.guest, name);
    const std::string host = name;
    const std::string guest = pe.record.guest;
    retire_copy(self, host, guest, [self, host, guest] {
      if (auto it = self->state.hosts.find(host); it != self->state.hosts.end())
        it->second.sweeping.erase(guest);
    });
  }
}

} // namespace

void tend_pairs(cluster_actor* self) {
  // An evacuation waits for the pairs with a side on its host.
  for (const auto& [id, e] : self->state.evacuations)
    if (!e.record.finished)
      check_evacuation_done(self, id);
  for (auto& [guest, pe] : self->state.pairs) {
    if (pe.busy)
      continue;
    switch (pe.record.state) {
      case pair_state::protecting:
      case pair_state::re_protecting:
        // An attempt an earlier orchestrator began is not known here: it
        // is undone and made again.
        if (!pe.attempt)
          protect_failed(self, guest, pe.record.id, "the orchestrator restarted while protecting");
        else
          poll_pair(self, pe);
        break;
      case pair_state::protected_:
        retire_strays(self, pe);
        poll_pair(self, pe);
        break;
      case pair_state::failing_over:
        // Journaled with the survivor as primary; an orchestrator that
        // stopped mid-way finishes it.
        (void) move_pair(self, pe, pair_state::unprotected, "runs on " + pe.record.primary);
        break;
      case pair_state::unprotected:
        retire_strays(self, pe);
        re_protect(self, pe);
        break;
      case pair_state::ended:
        break;
    }
  }
}

} // namespace ferry::cluster_detail
