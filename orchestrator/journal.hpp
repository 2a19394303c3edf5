#pragma once
// The orchestrator's journal (SQLite): every job and each of its transitions
// is written here *before* the orchestrator acts on it, so that after a crash
// a restarted orchestrator knows what may have been in flight and reconciles
// it with what the agents report.

#include "orchestrator/job_state.hpp"
#include "orchestrator/pair_state.hpp"

#include <caf/expected.hpp>

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

struct sqlite3;

namespace ferry {

struct job_record {
  int64_t id = 0;
  std::string guest;
  std::string source;
  std::string target;
  job_state state = job_state::pending;
  int64_t evacuation = 0; // 0: a single migration
  int32_t priority = 0;
  uint64_t memory = 0; // the guest's RAM, for planning
  std::string error;
  int attempt = 1; // evacuation retries on another host count up
};

struct transition_record {
  int64_t job = 0;
  job_state from = job_state::pending;
  job_state to = job_state::pending;
  double at = 0; // seconds since the epoch
  std::string note;
};

// One rung of a job's escalation ladder.
struct step_record {
  int64_t job = 0;
  double at = 0;
  std::string step;
};

struct evacuation_record {
  int64_t id = 0;
  std::string host;
  bool finished = false;
};

// A COLO pair: the guest, where it runs (primary) and where its
// checkpoints go (secondary, "" while it has none).
struct pair_record {
  int64_t id = 0;
  std::string guest;
  std::string primary;
  std::string secondary;
  pair_state state = pair_state::protecting;
  std::string error; // why it is not protected, while it is not
  int64_t failovers = 0;
};

struct pair_step_record {
  int64_t pair = 0;
  pair_state from = pair_state::protecting;
  pair_state to = pair_state::protecting;
  double at = 0;
  std::string note;
};

// A snapshot operation a guest's agent runs as a QMP job (snapshot-save,
// -load or -delete on its disk), journaled so a restarted orchestrator
// learns how one under way ended.
struct snapshot_record {
  int64_t id = 0;
  std::string guest;
  std::string host;
  std::string op; // save, restore, delete
  std::string tag;
  std::string state = "running"; // running, done, failed
  std::string error;
};

class journal {
public:
  // The orchestrator's own journal: checked (PRAGMA quick_check) and held
  // with an exclusive lock on PATH.lock, so two orchestrators never share
  // one; a damaged, unreadable or held journal is a clear error.
  static caf::expected<std::unique_ptr<journal>> open(const std::string& path);
  // Read-only, without the lock: tools and tests looking at a journal an
  // orchestrator may still hold.
  static caf::expected<std::unique_ptr<journal>> open_for_reading(const std::string& path);
  ~journal();
  journal(const journal&) = delete;
  journal& operator=(const journal&) = delete;

  // Inserts a pending job; returns it with its id.
  caf::expected<job_record> add_job(job_record job);
  // Records `from -> to` (refused if the table forbids it or the job is not
  // in `from`), with the target and error as they now stand.
  caf::expected<void> move(const job_record& job, job_state to, const std::string& note);

  // Records an escalation step of a running job (before it is taken).
  caf::expected<void> add_step(int64_t job, const std::string& step);
  std::vector<step_record> steps() const;

  caf::expected<evacuation_record> add_evacuation(const std::string& host);
  caf::expected<void> finish_evacuation(int64_t id);

  // A new pair, protecting (refused while the guest has a pair not ended).
  caf::expected<pair_record> add_pair(pair_record p);
  // Records `from -> to` with the hosts, error and failovers as they now
  // stand (refused as move() refuses).
  caf::expected<void> move_pair(const pair_record& p, pair_state to, const std::string& note);
  std::vector<pair_record> pairs(bool unended_only) const;
  std::vector<pair_step_record> pair_history() const;

  // A new snapshot operation, running; then how it ended (refused unless
  // it was running).
  caf::expected<snapshot_record> add_snapshot(snapshot_record r);
  caf::expected<void> finish_snapshot(int64_t id, bool ok, const std::string& error);
  std::vector<snapshot_record> snapshots(bool unfinished_only) const;

  std::vector<job_record> jobs(bool unfinished_only) const;
  std::vector<transition_record> transitions() const;
  std::vector<evacuation_record> evacuations(bool unfinished_only) const;

private:
  explicit journal(sqlite3* db, int lock_fd = -1) : db_(db), lock_fd_(lock_fd) {}
  caf::expected<void> exec(const std::string& sql);
  // quick_check, then every unfinished job and evacuation read to the end.
  caf::expected<void> check() const;
  sqlite3* db_;
  int lock_fd_; // PATH.lock, flock'ed while the journal is open (-1: none)
  mutable std::mutex mu_;
};

} // namespace ferry
