#pragma once
// The incoming side of a migration, on its own thread ("mig-incoming"):
// listen, check the source's handshake against this guest (RAM size, page
// size, capabilities, UUID), receive pages on the main channel or on one
// receiving thread per multifd channel ("mig-recv/N"), load the CPU state,
// confirm to the source, and start the guest. The stream is untrusted:
// every record is checked before guest memory is touched, and any fault
// fails the migration with a reason, never the process.

#include "agent/migration/engine_phase.hpp"
#include "agent/migration/migration_source.hpp" // migration_hooks
#include "agent/transport/migration_address.hpp"
#include "agent/transport/migration_channel.hpp"
#include "agent/vmm/guest.hpp"
#include "protocol/page_compression.hpp"

#include <caf/expected.hpp>

#include <boost/json/object.hpp>

#include <array>
#include <functional>
#include <memory>
#include <optional>
#include <string>

namespace ferry {

struct incoming_migration {
  migration_address from;
  bool multifd = false;
  uint32_t channels = 2;
  bool validate_uuid = false;
  bool postcopy = false;  // postcopy-ram: the source may switch to postcopy
  bool preempt = false;   // postcopy-preempt
  bool blocktime = false; // postcopy-blocktime: measure how long the vCPUs wait
  bool switchover_ack = false;
  bool colo = false; // x-colo: hold the guest as a COLO secondary
  // x-ignore-shared: a source whose RAM is a shared file sends none; this
  // side's must be the same file (checked by the shared-ram record).
  bool ignore_shared = false;
  // mapped-ram (a file: source only): the pages are read from their offsets
  // by `mapped_threads` threads, the stream from the file's state region.
  bool mapped_ram = false;
  uint32_t mapped_threads = 1;
  mig::compression compress = mig::compression::none; // with multifd only
  std::array<uint8_t, 16> uuid{};
  bool events = false;
  std::shared_ptr<tls_context> tls; // every channel runs TLS when set
  // With tls-authz: the one client DN let in (none: nobody, the named
  // authz object does not exist).
  bool check_authz = false;
  std::optional<std::string> authz_identity;
  // Called when the source connects, before anything is read: capabilities
  // and parameters may still change between migrate-incoming (or -incoming)
  // and then, as in QEMU. An error text refuses the migration.
  std::function<std::optional<std::string>(incoming_migration&)> refresh;
  // Tests only: called with each page just applied, before the digest
  // reads it (a test corrupts one to see the switchover refuse the guest).
  std::function<void(uint64_t pfn, uint8_t* page)> after_apply;
};

class migration_destination {
public:
  // Binds the listener now (so a bad address fails the command), then
  // receives on its thread.
  static caf::expected<std::unique_ptr<migration_destination>>
  listen(guest& g, incoming_migration plan, migration_hooks hooks);
  // Receives the channels `acceptor` yields (tests: loopback streams);
  // plan.from still says whether replies can flow back.
  static std::unique_ptr<migration_destination> start(guest& g, incoming_migration plan,
                                                      migration_hooks hooks,
                                                      std::unique_ptr<channel_acceptor> acceptor);
  ~migration_destination();
  migration_destination(const migration_destination&) = delete;
  migration_destination& operator=(const migration_destination&) = delete;

  // Where it listens (tcp port 0 resolved).
  const migration_address& address() const;
  // Where the engine is (engine_phase).
  // Whether the source guest ran when it stopped for the switch-over (the
  // devices record says so); until that record, true.
  bool source_was_running() const;
  destination_phase phase() const;
  // Fails the migration with `why` (the guest will not start from it),
  // unless it already completed.
  void cancel(const std::string& why);
  // x-colo-lost-heartbeat on the secondary: it takes over from its last
  // whole checkpoint.
  void colo_lost_heartbeat();
  // migrate-pause: the postcopy link is cut as if it had failed.
  void pause_postcopy();
  // migrate-recover: a paused postcopy waits for its source on `acceptor`.
  void recover(std::unique_ptr<channel_acceptor> acceptor);
  // Memory and CPU state have all arrived: from here on this copy may be
  // the only whole one, even if the hand-over then fails.
  bool holds_whole_guest() const;
  void fill_info(migration_status s, boost::json::object& info) const;

  struct impl;

private:
  explicit migration_destination(std::unique_ptr<impl> p);
  std::unique_ptr<impl> impl_;
};

} // namespace ferry
