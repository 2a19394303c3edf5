#pragma once
// The QMP commands of one guest: what each does, its argument checks and the
// events it raises. Transport-free — qmp_server feeds it parsed requests — so
// tests can call it directly. One dispatch table maps names to handlers;
// arguments of schema commands are checked against the QAPI schema first.
// Schema commands without a handler yet answer what they still lack. The
// migrations themselves belong to the migration controller: the monitor
// checks, plans and hands over.

#include "agent/block/block_devices.hpp"
#include "agent/convergence/dirty_limit.hpp"
#include "agent/convergence/dirty_rate.hpp"
#include "agent/migration/migration_controller.hpp"
#include "agent/migration/migration_settings.hpp"
#include "agent/qmp/job_registry.hpp"
#include "agent/vmm/guest.hpp"
#include "protocol/qmp_wire.hpp"

#include <boost/json/object.hpp>
#include <boost/json/value.hpp>

#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <variant>

namespace ferry {

struct qmp_failure {
  qmp::error_class cls = qmp::error_class::generic_error;
  std::string desc;
};

using qmp_result = std::variant<boost::json::value, qmp_failure>;

struct vm_identity {
  std::string name;
  std::string uuid;
};

class qmp_monitor {
public:
  // `emit` sends an event line to every client; `on_quit` asks the process to
  // exit once the reply is out.
  qmp_monitor(guest& g, vm_identity id, std::function<void(std::string)> emit,
              std::function<void()> on_quit, migration_host_facts facts = {});
  ~qmp_monitor();
  qmp_monitor(const qmp_monitor&) = delete;
  qmp_monitor& operator=(const qmp_monitor&) = delete;

  // The agent was started with -incoming: the guest waits for a migration
  // (migrate-incoming is accepted) and starts when it lands, unless -S.
  void expect_incoming(bool autostart);
  // -incoming URI: migrate-incoming with that uri now. An error, or nothing.
  std::optional<std::string> start_incoming(const std::string& uri);
  // Called with an exit status when the process must end (a failed incoming
  // migration with exit-on-error).
  void set_exit_handler(std::function<void(int)> on_exit) {
    migration_.set_exit_handler(std::move(on_exit));
  }
  // The -object tls-creds-x509 and authz-simple objects that tls-creds and
  // tls-authz name. Credentials are loaded here, once, not by each
  // migration; one that cannot be loaded fails the migration that names it.
  void set_objects(std::vector<tls_creds_object> creds, std::vector<authz_object> authz);
  // -object x-ferry-colo's fence-timeout (0: a COLO primary never fences).
  void set_colo_fence(uint64_t ms) { colo_fence_ms_ = ms; }
  // -object x-ferry-colo's output=compare.
  void set_colo_compare(bool on) { colo_compare_ = on; }
  // The guest's disks (-drive/-blockdev), for the snapshot commands.
  void set_block_devices(block_devices* d) { disks_ = d; }

  qmp_result execute(const std::string& command, const boost::json::object& args);
  // Every command of query-commands: Ferry's own and every command of the
  // migration schema.
  static const std::vector<std::string>& commands();
  // The commands that do their job today.
  static const std::vector<std::string>& implemented_commands();

  const migration_settings& settings() const { return settings_; }
  // The outgoing migration's status.
  migration_status status() const;
  // Steps the status by hand (tests; the engines step it through the
  // migration controller): the machine steps or refuses, and a MIGRATION
  // event goes out when the `events` capability is on.
  caf::expected<migration_status> migration_step(migration_event ev);
  caf::expected<migration_status> migration_step(migration_side side, migration_event ev);

private:
  using handler = qmp_result (qmp_monitor::*)(const boost::json::object&);
  struct entry {
    const char* name;
    handler fn;
    // Commands outside the 9.1 schema that take arguments check them in
    // their handler; every other command outside it takes none.
    bool own_arguments = false;
  };
  static const std::vector<entry>& table();

  qmp_result query_status(const boost::json::object&);
  qmp_result query_version(const boost::json::object&);
  qmp_result query_name(const boost::json::object&);
  qmp_result query_uuid(const boost::json::object&);
  qmp_result query_commands(const boost::json::object&);
  qmp_result stop(const boost::json::object&);
  qmp_result cont(const boost::json::object&);
  qmp_result quit(const boost::json::object&);
  qmp_result pmemsave(const boost::json::object&);
  qmp_result query_migrate(const boost::json::object&);
  qmp_result migrate(const boost::json::object&);
  qmp_result migrate_incoming(const boost::json::object&);
  qmp_result query_migrationthreads(const boost::json::object&);
  // Why the current capabilities and parameters cannot migrate yet, if so.
  std::optional<std::string> unsupported_settings() const;
  // Why migration mode cpr-reboot, or x-ignore-shared, rules out what else
  // is set, if so.
  std::optional<std::string> mode_refusal() const;
  std::optional<std::string> migrate_refusal(const migration_address& a);
  // Why mapped-ram cannot use `a`, if so.
  std::optional<std::string> mapped_ram_refusal(const migration_address& a) const;
  std::array<uint8_t, 16> uuid_bytes() const;
  // The TLS context tls-creds asks for on `side` (nullptr without TLS), or
  // why it cannot be had. Caller holds mtx_.
  std::variant<std::shared_ptr<tls_context>, std::string> tls_for(migration_side side,
                                                                  const migration_address& a) const;
  qmp_result query_migrate_capabilities(const boost::json::object&);
  qmp_result query_migrate_parameters(const boost::json::object&);
  qmp_result migrate_set_capabilities(const boost::json::object&);
  qmp_result migrate_set_parameters(const boost::json::object&);
  // A legacy {"value": size} command setting one size parameter.
  qmp_result set_size_parameter(const boost::json::object& args, const char* parameter);
  qmp_result migrate_set_speed(const boost::json::object&);
  qmp_result migrate_set_downtime(const boost::json::object&);
  qmp_result migrate_set_cache_size(const boost::json::object&);
  qmp_result query_migrate_cache_size(const boost::json::object&);
  qmp_result migrate_cancel(const boost::json::object&);
  qmp_result migrate_continue(const boost::json::object&);
  qmp_result migrate_pause(const boost::json::object&);
  // COLO (qmp_colo_commands.cpp).
  qmp_result query_colo_status(const boost::json::object&);
  qmp_result x_colo_lost_heartbeat(const boost::json::object&);
  qmp_result migrate_recover(const boost::json::object&);
  qmp_result migrate_start_postcopy(const boost::json::object&);
  qmp_result set_vcpu_dirty_limit(const boost::json::object&);
  qmp_result cancel_vcpu_dirty_limit(const boost::json::object&);
  qmp_result query_vcpu_dirty_limit(const boost::json::object&);
  // Why the vCPU dirty limit cannot be changed now (caller holds mtx_).
  std::optional<std::string> dirty_limit_refusal(const boost::json::object& args,
                                                 const char* verb) const;
  // set/cancel-vcpu-dirty-limit: the checks, then the new quota (0 = none).
  qmp_result change_dirty_limit(const boost::json::object& args, const char* verb,
                                uint64_t mib_per_s);
  std::shared_ptr<vcpu_dirty_limit> limiter(); // caller holds mtx_
  qmp_result calc_dirty_rate(const boost::json::object&);
  qmp_result query_dirty_rate(const boost::json::object&);
  dirty_rate_meter& meter();
  // Snapshots as jobs (qmp_snapshot_commands.cpp).
  qmp_result snapshot_save(const boost::json::object&);
  qmp_result snapshot_load(const boost::json::object&);
  qmp_result snapshot_delete(const boost::json::object&);
  qmp_result query_jobs(const boost::json::object&);
  qmp_result job_dismiss(const boost::json::object&);
  // The jobs' work, on their threads.
  caf::expected<void> save_snapshot(const std::string& tag, const std::string& vmstate,
                                    const std::vector<std::string>& devices);
  caf::expected<void> load_snapshot(const std::string& tag, const std::string& vmstate,
                                    const std::vector<std::string>& devices);
  caf::expected<void> delete_snapshot(const std::string& tag,
                                      const std::vector<std::string>& devices);
  caf::expected<std::vector<block_devices::device*>>
  snapshot_devices(const std::vector<std::string>& names, const std::string* vmstate = nullptr);
  std::optional<std::string> snapshot_refusal() const;

  guest& guest_;
  vm_identity id_;
  std::function<void(std::string)> emit_;
  std::function<void()> on_quit_;
  guest::pause_guard stopped_; // held while the guest is stopped by `stop`

  // The settings and the dirty-page tools; read by the engines' threads
  // (an incoming migration takes its settings when the source connects).
  // Taken before the controller's lock, never after it.
  mutable std::mutex mtx_;
  migration_settings settings_;
  struct loaded_creds {
    tls_creds_object object;
    std::shared_ptr<tls_context> context; // null when loading failed
    std::string error;                    // then why
  };
  std::vector<loaded_creds> tls_objects_;
  std::vector<authz_object> authz_objects_;
  uint64_t colo_fence_ms_ = 0;
  bool colo_compare_ = false;
  std::unique_ptr<dirty_rate_meter> dirty_rate_; // from the first use
  // Before the controller: a migration's thread may use it until joined.
  std::shared_ptr<vcpu_dirty_limit> dirty_limit_; // from the first use
  migration_controller migration_;
  block_devices* disks_ = nullptr;
  std::mutex no_disks_;                       // what a job locks when the guest has no disks
  std::atomic<bool> snapshot_running_{false}; // a snapshot job holds the guest
  std::mutex failed_load_mtx_;
  guest::pause_guard failed_load_hold_; // after a failed snapshot-load, until `cont`
  // Last: its jobs' threads use everything above until joined.
  job_registry jobs_{emit_};
};

} // namespace ferry
