#include "orchestrator/journal.hpp"

#include "orchestrator/orchestrator_error.hpp"

#include <fcntl.h>
#include <sqlite3.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>

namespace ferry {

namespace {

caf::error db_error(sqlite3* db, const std::string& what) {
  return make_orchestrator_error(orchestrator_errc::journal,
                                 "journal: " + what + ": " + sqlite3_errmsg(db));
}

double now_seconds() {
  using namespace std::chrono;
  return duration<double>(system_clock::now().time_since_epoch()).count();
}

// A prepared statement that finalizes itself.
class statement {
public:
  statement(sqlite3* db, const char* sql) {
    if (sqlite3_prepare_v2(db, sql, -1, &st_, nullptr) != SQLITE_OK)
      st_ = nullptr;
  }
  ~statement() { sqlite3_finalize(st_); }
  statement(const statement&) = delete;
  statement& operator=(const statement&) = delete;

  bool ok() const { return st_ != nullptr; }
  statement& bind(int i, const std::string& v) {
    sqlite3_bind_text(st_, i, v.c_str(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
    return *this;
  }
  statement& bind(int i, int64_t v) {
    sqlite3_bind_int64(st_, i, v);
    return *this;
  }
  statement& bind(int i, double v) {
    sqlite3_bind_double(st_, i, v);
    return *this;
  }
  int step() { return sqlite3_step(st_); }
  std::string text(int col) const {
    const auto* p = sqlite3_column_text(st_, col);
    return p == nullptr ? std::string{} : std::string{reinterpret_cast<const char*>(p)};
  }
  int64_t integer(int col) const { return sqlite3_column_int64(st_, col); }
  double real(int col) const { return sqlite3_column_double(st_, col); }

private:
  sqlite3_stmt* st_ = nullptr;
};

constexpr const char* schema = R"(
CREATE TABLE IF NOT EXISTS jobs (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  guest TEXT NOT NULL, source TEXT NOT NULL, target TEXT NOT NULL,
  state TEXT NOT NULL, evacuation INTEGER NOT NULL, priority INTEGER NOT NULL,
  memory INTEGER NOT NULL, error TEXT NOT NULL, attempt INTEGER NOT NULL,
  created REAL NOT NULL, updated REAL NOT NULL);
CREATE TABLE IF NOT EXISTS transitions (
  seq INTEGER PRIMARY KEY AUTOINCREMENT, job INTEGER NOT NULL,
  from_state TEXT NOT NULL, to_state TEXT NOT NULL, at REAL NOT NULL, note TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS steps (
  seq INTEGER PRIMARY KEY AUTOINCREMENT, job INTEGER NOT NULL, at REAL NOT NULL,
  step TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS evacuations (
  id INTEGER PRIMARY KEY AUTOINCREMENT, host TEXT NOT NULL, finished INTEGER NOT NULL,
  created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS pairs (
  id INTEGER PRIMARY KEY AUTOINCREMENT, guest TEXT NOT NULL, primary_host TEXT NOT NULL,
  secondary_host TEXT NOT NULL, state TEXT NOT NULL, error TEXT NOT NULL,
  failovers INTEGER NOT NULL, created REAL NOT NULL, updated REAL NOT NULL);
CREATE TABLE IF NOT EXISTS pair_steps (
  seq INTEGER PRIMARY KEY AUTOINCREMENT, pair INTEGER NOT NULL,
  from_state TEXT NOT NULL, to_state TEXT NOT NULL, at REAL NOT NULL, note TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS snapshots (
  id INTEGER PRIMARY KEY AUTOINCREMENT, guest TEXT NOT NULL, host TEXT NOT NULL,
  op TEXT NOT NULL, tag TEXT NOT NULL, state TEXT NOT NULL, error TEXT NOT NULL,
  created REAL NOT NULL, updated REAL NOT NULL);
)";

job_record read_job(const statement& s) {
  job_record j;
  j.id = s.integer(0);
  j.guest = s.text(1);
  j.source = s.text(2);
  j.target = s.text(3);
  j.state = job_state_from_string(s.text(4)).value_or(job_state::failed);
  j.evacuation = s.integer(5);
  j.priority = static_cast<int32_t>(s.integer(6));
  j.memory = static_cast<uint64_t>(s.integer(7));
  j.error = s.text(8);
  j.attempt = static_cast<int>(s.integer(9));
  return j;
}

} // namespace

namespace {

// How long a statement waits for a lock another connection holds (a reader
// of a held journal) before it fails.
constexpr int busy_timeout_ms = 5000;

// PATH.lock, held with flock for as long as the journal is open. The pid
// inside names the holder in the refusal.
caf::expected<int> lock_journal(const std::string& path) {
  const std::string lock_path = path + ".lock";
  const int fd = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0)
    return make_orchestrator_error(orchestrator_errc::journal,
                                   "journal: cannot open '" + path +
                                     "' (its lock file: " + std::strerror(errno) + ")");
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    char holder[32] = {};
    const auto n = ::pread(fd, holder, sizeof holder - 1, 0);
    ::close(fd);
    std::string who = n > 0 ? std::string{holder, static_cast<size_t>(n)} : std::string{};
    while (!who.empty() && (who.back() == '\n' || who.back() == ' '))
      who.pop_back();
    return make_orchestrator_error(orchestrator_errc::journal,
                                   "journal: '" + path + "' is in use by another orchestrator" +
                                     (who.empty() ? std::string{} : " (pid " + who + ")") +
                                     "; two must never share one journal");
  }
  const std::string pid = std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, pid.data(), pid.size(), 0) < 0) {
    // The lock holds without the pid; only the refusal's text is poorer.
  }
  return fd;
}

caf::expected<sqlite3*> open_db(const std::string& path, int flags) {
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(path.c_str(), &db, flags, nullptr) != SQLITE_OK) {
    auto err = db_error(db, "cannot open '" + path + "'");
    sqlite3_close(db);
    return err;
  }
  sqlite3_busy_timeout(db, busy_timeout_ms);
  return db;
}

} // namespace

caf::expected<std::unique_ptr<journal>> journal::open(const std::string& path) {
  // The lock comes first: a second orchestrator must not even set the
  // journal mode of a journal in use.
  auto lock = lock_journal(path);
  if (!lock)
    return lock.error();
  auto db = open_db(path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
  if (!db) {
    ::close(*lock);
    return db.error();
  }
  std::unique_ptr<journal> j{new journal(*db, *lock)};
  // WAL + synchronous=FULL: a transition that returned is on disk even if
  // the orchestrator is killed right after.
  if (auto ok = j->exec("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"); !ok)
    return ok.error();
  if (auto ok = j->exec(schema); !ok)
    return ok.error();
  if (auto ok = j->check(); !ok)
    return ok.error();
  return j;
}

caf::expected<std::unique_ptr<journal>> journal::open_for_reading(const std::string& path) {
  auto db = open_db(path, SQLITE_OPEN_READONLY);
  if (!db)
    return db.error();
  return std::unique_ptr<journal>{new journal(*db)};
}

caf::expected<void> journal::check() const {
  std::lock_guard<std::mutex> lock{mu_};
  {
    statement s{db_, "PRAGMA quick_check"};
    std::string verdict;
    int rc = SQLITE_ROW;
    while (s.ok() && (rc = s.step()) == SQLITE_ROW)
      verdict += (verdict.empty() ? "" : "; ") + s.text(0);
    if (!s.ok() || rc != SQLITE_DONE || verdict != "ok")
      return make_orchestrator_error(
        orchestrator_errc::journal,
        "journal: damaged (quick_check: " + (verdict.empty() ? sqlite3_errmsg(db_) : verdict) +
          "); restore it from a backup or move it aside — unfinished migrations in it would "
          "otherwise be lost");
  }
  // What a restart resumes must read to the end, or the orchestrator must
  // not start: a job silently left out would never be reconciled.
  for (const char* sql : {"SELECT id, state FROM jobs", "SELECT id, finished FROM evacuations",
                          "SELECT id, state FROM pairs"}) {
    statement s{db_, sql};
    int rc = SQLITE_ROW;
    while (s.ok() && (rc = s.step()) == SQLITE_ROW) {
    }
    if (!s.ok() || rc != SQLITE_DONE)
      return db_error(db_, std::string{"reading '"} + sql + "'");
  }
  return {};
}

journal::~journal() {
  sqlite3_close(db_);
  if (lock_fd_ >= 0)
    ::close(lock_fd_); // releases the flock
}

caf::expected<void> journal::exec(const std::string& sql) {
  char* msg = nullptr;
  if (sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &msg) != SQLITE_OK) {
    std::string text = msg != nullptr ? msg : "unknown error";
    sqlite3_free(msg);
    return make_orchestrator_error(orchestrator_errc::journal, "journal: " + text);
  }
  return {};
}

caf::expected<job_record> journal::add_job(job_record job) {
  std::lock_guard<std::mutex> lock{mu_};
  job.state = job_state::pending;
  statement s{db_, "INSERT INTO jobs (guest, source, target, state, evacuation, priority, memory, "
                   "error, attempt, created, updated) VALUES (?,?,?,?,?,?,?,?,?,?,?)"};
  if (!s.ok())
    return db_error(db_, "prepare");
  const double now = now_seconds();
  s.bind(1, job.guest).bind(2, job.source).bind(3, job.target);
  s.bind(4, std::string{to_string(job.state)}).bind(5, job.evacuation);
  s.bind(6, int64_t{job.priority}).bind(7, static_cast<int64_t>(job.memory));
  s.bind(8, job.error).bind(9, int64_t{job.attempt}).bind(10, now).bind(11, now);
  if (s.step() != SQLITE_DONE)
    return db_error(db_, "insert job");
  job.id = sqlite3_last_insert_rowid(db_);
  return job;
}

caf::expected<void> journal::move(const job_record& job, job_state to, const std::string& note) {
  std::lock_guard<std::mutex> lock{mu_};
  if (!job_can_move(job.state, to))
    return make_orchestrator_error(orchestrator_errc::journal,
                                   "journal: job " + std::to_string(job.id) + " cannot move " +
                                     std::string{to_string(job.state)} + " -> " +
                                     std::string{to_string(to)});
  if (auto ok = exec("BEGIN IMMEDIATE"); !ok)
    return ok;
  statement u{db_, "UPDATE jobs SET state=?, target=?, error=?, updated=? WHERE id=? AND state=?"};
  statement t{db_, "INSERT INTO transitions (job, from_state, to_state, at, note) "
                   "VALUES (?,?,?,?,?)"};
  const double now = now_seconds();
  bool ok = u.ok() && t.ok();
  if (ok) {
    u.bind(1, std::string{to_string(to)}).bind(2, job.target).bind(3, job.error).bind(4, now);
    u.bind(5, job.id).bind(6, std::string{to_string(job.state)});
    ok = u.step() == SQLITE_DONE && sqlite3_changes(db_) == 1;
  }
  if (ok) {
    t.bind(1, job.id).bind(2, std::string{to_string(job.state)});
    t.bind(3, std::string{to_string(to)}).bind(4, now).bind(5, note);
    ok = t.step() == SQLITE_DONE;
  }
  if (!ok) {
    auto err = db_error(db_, "job " + std::to_string(job.id) + " transition");
    (void) exec("ROLLBACK");
    return err;
  }
  return exec("COMMIT");
}

caf::expected<void> journal::add_step(int64_t job, const std::string& step) {
  std::lock_guard<std::mutex> lock{mu_};
  statement s{db_, "INSERT INTO steps (job, at, step) VALUES (?,?,?)"};
  if (!s.ok())
    return db_error(db_, "prepare");
  s.bind(1, job).bind(2, now_seconds()).bind(3, step);
  if (s.step() != SQLITE_DONE)
    return db_error(db_, "insert step");
  return {};
}

std::vector<step_record> journal::steps() const {
  std::lock_guard<std::mutex> lock{mu_};
  statement s{db_, "SELECT job, at, step FROM steps ORDER BY seq"};
  std::vector<step_record> out;
  while (s.ok() && s.step() == SQLITE_ROW)
    out.push_back({s.integer(0), s.real(1), s.text(2)});
  return out;
}

caf::expected<evacuation_record> journal::add_evacuation(const std::string& host) {
  std::lock_guard<std::mutex> lock{mu_};
  statement s{db_, "INSERT INTO evacuations (host, finished, created) VALUES (?,0,?)"};
  if (!s.ok())
    return db_error(db_, "prepare");
  s.bind(1, host).bind(2, now_seconds());
  if (s.step() != SQLITE_DONE)
    return db_error(db_, "insert evacuation");
  return evacuation_record{sqlite3_last_insert_rowid(db_), host, false};
}

caf::expected<void> journal::finish_evacuation(int64_t id) {
  std::lock_guard<std::mutex> lock{mu_};
  statement s{db_, "UPDATE evacuations SET finished=1 WHERE id=?"};
  if (!s.ok())
    return db_error(db_, "prepare");
  s.bind(1, id);
  if (s.step() != SQLITE_DONE)
    return db_error(db_, "finish evacuation");
  return {};
}

caf::expected<pair_record> journal::add_pair(pair_record p) {
  std::lock_guard<std::mutex> lock{mu_};
  {
    statement q{db_, "SELECT COUNT(*) FROM pairs WHERE guest=? AND state<>'ended'"};
    if (!q.ok())
      return db_error(db_, "prepare");
    q.bind(1, p.guest);
    if (q.step() != SQLITE_ROW)
      return db_error(db_, "read pairs");
    if (q.integer(0) != 0)
      return make_orchestrator_error(orchestrator_errc::journal,
                                     "journal: guest '" + p.guest + "' already has a COLO pair");
  }
  p.state = pair_state::protecting;
  statement s{db_, "INSERT INTO pairs (guest, primary_host, secondary_host, state, error, "
                   "failovers, created, updated) VALUES (?,?,?,?,?,?,?,?)"};
  if (!s.ok())
    return db_error(db_, "prepare");
  const double now = now_seconds();
  s.bind(1, p.guest).bind(2, p.primary).bind(3, p.secondary);
  s.bind(4, std::string{to_string(p.state)}).bind(5, p.error).bind(6, p.failovers);
  s.bind(7, now).bind(8, now);
  if (s.step() != SQLITE_DONE)
    return db_error(db_, "insert pair");
  p.id = sqlite3_last_insert_rowid(db_);
  return p;
}

caf::expected<void> journal::move_pair(const pair_record& p, pair_state to,
                                       const std::string& note) {
  std::lock_guard<std::mutex> lock{mu_};
  if (!pair_can_move(p.state, to))
    return make_orchestrator_error(orchestrator_errc::journal,
                                   "journal: pair of '" + p.guest + "' cannot move " +
                                     std::string{to_string(p.state)} + " -> " +
                                     std::string{to_string(to)});
  if (auto ok = exec("BEGIN IMMEDIATE"); !ok)
    return ok;
  statement u{db_, "UPDATE pairs SET state=?, primary_host=?, secondary_host=?, error=?, "
                   "failovers=?, updated=? WHERE id=? AND state=?"};
  statement t{db_, "INSERT INTO pair_steps (pair, from_state, to_state, at, note) "
                   "VALUES (?,?,?,?,?)"};
  const double now = now_seconds();
  bool ok = u.ok() && t.ok();
  if (ok) {
    u.bind(1, std::string{to_string(to)}).bind(2, p.primary).bind(3, p.secondary);
    u.bind(4, p.error).bind(5, p.failovers).bind(6, now).bind(7, p.id);
    u.bind(8, std::string{to_string(p.state)});
    ok = u.step() == SQLITE_DONE && sqlite3_changes(db_) == 1;
  }
  if (ok) {
    t.bind(1, p.id).bind(2, std::string{to_string(p.state)});
    t.bind(3, std::string{to_string(to)}).bind(4, now).bind(5, note);
    ok = t.step() == SQLITE_DONE;
  }
  if (!ok) {
    auto err = db_error(db_, "pair of '" + p.guest + "' transition");
    (void) exec("ROLLBACK");
    return err;
  }
  return exec("COMMIT");
}

std::vector<pair_record> journal::pairs(bool unended_only) const {
  std::lock_guard<std::mutex> lock{mu_};
  statement s{db_, unended_only
                     ? "SELECT id, guest, primary_host, secondary_host, state, error, failovers "
                       "FROM pairs WHERE state<>'ended' ORDER BY id"
                     : "SELECT id, guest, primary_host, secondary_host, state, error, failovers "
                       "FROM pairs ORDER BY id"};
  std::vector<pair_record> out;
  while (s.ok() && s.step() == SQLITE_ROW) {
    pair_record p;
    p.id = s.integer(0);
    p.guest = s.text(1);
    p.primary = s.text(2);
    p.secondary = s.text(3);
    p.state = pair_state_from_string(s.text(4)).value_or(pair_state::unprotected);
    p.error = s.text(5);
    p.failovers = s.integer(6);
    out.push_back(std::move(p));
  }
  return out;
}

std::vector<pair_step_record> journal::pair_history() const {
  std::lock_guard<std::mutex> lock{mu_};
  statement s{db_, "SELECT pair, from_state, to_state, at, note FROM pair_steps ORDER BY seq"};
  std::vector<pair_step_record> out;
  while (s.ok() && s.step() == SQLITE_ROW) {
    pair_step_record r;
    r.pair = s.integer(0);
    r.from = pair_state_from_string(s.text(1)).value_or(pair_state::unprotected);
    r.to = pair_state_from_string(s.text(2)).value_or(pair_state::unprotected);
    r.at = s.real(3);
    r.note = s.text(4);
    out.push_back(std::move(r));
  }
  return out;
}

std::vector<job_record> journal::jobs(bool unfinished_only) const {
  std::lock_guard<std::mutex> lock{mu_};
  statement s{db_, unfinished_only
                     ? "SELECT id, guest, source, target, state, evacuation, priority, memory, "
                       "error, attempt FROM jobs WHERE state NOT IN "
                       "('succeeded','failed','cancelled') ORDER BY id"
                     : "SELECT id, guest, source, target, state, evacuation, priority, memory, "
                       "error, attempt FROM jobs ORDER BY id"};
  std::vector<job_record> out;
  while (s.ok() && s.step() == SQLITE_ROW)
    out.push_back(read_job(s));
  return out;
}

std::vector<transition_record> journal::transitions() const {
  std::lock_guard<std::mutex> lock{mu_};
  statement s{db_, "SELECT job, from_state, to_state, at, note FROM transitions ORDER BY seq"};
  std::vector<transition_record> out;
  while (s.ok() && s.step() == SQLITE_ROW) {
    transition_record r;
    r.job = s.integer(0);
    r.from = job_state_from_string(s.text(1)).value_or(job_state::failed);
    r.to = job_state_from_string(s.text(2)).value_or(job_state::failed);
    r.at = s.real(3);
    r.note = s.text(4);
    out.push_back(std::move(r));
  }
  return out;
}

caf::expected<snapshot_record> journal::add_snapshot(snapshot_record r) {
  std::lock_guard<std::mutex> lock{mu_};
  r.state = "running";
  r.error.clear();
  statement s{db_, "INSERT INTO snapshots (guest, host, op, tag, state, error, created, updated) "
                   "VALUES (?,?,?,?,?,?,?,?)"};
  if (!s.ok())
    return db_error(db_, "prepare");
  const double now = now_seconds();
  s.bind(1, r.guest).bind(2, r.host).bind(3, r.op).bind(4, r.tag).bind(5, r.state);
  s.bind(6, r.error).bind(7, now).bind(8, now);
  if (s.step() != SQLITE_DONE)
    return db_error(db_, "insert snapshot");
  r.id = sqlite3_last_insert_rowid(db_);
  return r;
}

caf::expected<void> journal::finish_snapshot(int64_t id, bool ok, const std::string& error) {
  std::lock_guard<std::mutex> lock{mu_};
  statement s{db_, "UPDATE snapshots SET state=?, error=?, updated=? WHERE id=? AND "
                   "state='running'"};
  if (!s.ok())
    return db_error(db_, "prepare");
  s.bind(1, std::string{ok ? "done" : "failed"}).bind(2, error).bind(3, now_seconds()).bind(4, id);
  if (s.step() != SQLITE_DONE)
    return db_error(db_, "finish snapshot");
  if (sqlite3_changes(db_) != 1)
    return make_orchestrator_error(orchestrator_errc::journal, "journal: snapshot operation " +
                                                                 std::to_string(id) +
                                                                 " is not running");
  return {};
}

std::vector<snapshot_record> journal::snapshots(bool unfinished_only) const {
  std::lock_guard<std::mutex> lock{mu_};
  statement s{db_, unfinished_only ? "SELECT id, guest, host, op, tag, state, error FROM "
                                     "snapshots WHERE state='running' ORDER BY id"
                                   : "SELECT id, guest, host, op, tag, state, error FROM "
                                     "snapshots ORDER BY id"};
  std::vector<snapshot_record> out;
  while (s.ok() && s.step() == SQLITE_ROW)
    out.push_back({s.integer(0), s.text(1), s.text(2), s.text(3), s.text(4), s.text(5), s.text(6)});
  return out;
}

std::vector<evacuation_record> journal::evacuations(bool unfinished_only) const {
  std::lock_guard<std::mutex> lock{mu_};
  statement s{db_, unfinished_only
                     ? "SELECT id, host, finished FROM evacuations WHERE finished=0 ORDER BY id"
                     : "SELECT id, host, finished FROM evacuations ORDER BY id"};
  std::vector<evacuation_record> out;
  while (s.ok() && s.step() == SQLITE_ROW)
    out.push_back({s.integer(0), s.text(1), s.integer(2) != 0});
  return out;
}

} // namespace ferry
