#pragma once
// Inside the receiving engine (agent/migration/migration_destination): its
// state, shared by the file that runs the phases and receives pages
// (migration_destination.cpp) and the one that admits the source's
// connections and checks what both sides agree on (destination_channels.cpp).
// Internal to agent/migration/.

#include "agent/migration/engine_phase.hpp"
#include "agent/migration/mapped_ram_io.hpp"
#include "agent/migration/migration_counters.hpp"
#include "agent/migration/migration_destination.hpp"
#include "agent/migration/postcopy_blocktime.hpp"
#include "agent/transport/migration_channel.hpp"
#include "agent/transport/sockets.hpp"
#include "agent/vmm/dirty_bitmap.hpp"
#include "agent/vmm/userfault_region.hpp"
#include "common/error.hpp"
#include "common/unique_fd.hpp"
#include "protocol/colo_records.hpp"
#include "protocol/page_digest.hpp"
#include "protocol/postcopy_records.hpp"

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

namespace ferry {

class checkpoint_staging;
using clock_type = std::chrono::steady_clock;

namespace destination_detail {

inline constexpr int channel_accept_timeout_ms = 30'000;
// How often the wait for a multifd channel looks at the main channel.
inline constexpr int accept_slice_ms = 100;

inline caf::error refuse(std::string why) {
  return make_ferry_error(errc::invalid_argument, std::move(why));
}

inline std::string hex16(const std::array<uint8_t, 16>& u) {
  static const char* digits = "0123456789abcdef";
  std::string s;
  for (size_t i = 0; i < u.size(); ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10)
      s += '-';
    s += digits[u[i] >> 4];
    s += digits[u[i] & 15];
  }
  return s;
}

} // namespace destination_detail

using destination_detail::refuse;

struct migration_destination::impl {
  guest& g;
  incoming_migration plan;
  migration_hooks hooks;
  std::unique_ptr<channel_acceptor> listener;

  std::atomic<bool> stop{false};
  std::atomic<bool> closing{false}; // the owner ends it (shutdown, cancel): no pause
  migration_counters ctr;
  mig::compression compress = mig::compression::none; // as agreed in the hello
  // One bit per page that may hold data: pages never written are known to
  // be zero, so zero pages in the stream need not touch them.
  std::vector<std::atomic<uint64_t>> maybe_nonzero;

  mutable std::mutex mtx; // error, channels
  std::string error;
  std::vector<std::unique_ptr<migration_channel>> channels;
  std::atomic<uint64_t> total_ms{0};
  std::atomic<uint64_t> received_closed{0}; // bytes of channels already closed
  clock_type::time_point start = clock_type::now();
  migration_channel* main = nullptr; // channels[0] once accepted
  mig::hello hello;                  // the source's, as agreed
  bool multifd = false;
  std::vector<std::thread> receivers;            // mig-recv/N
  std::vector<uint8_t> cpu;                      // the CPU state record
  bool devices = false;                          // the device record arrived
  std::atomic<bool> source_running{true};        // the source guest ran at switchover
  std::atomic<bool> whole_guest{false};          // memory and CPU state all loaded
  mig::memory_digest digest{g.memory().pages()}; // over every page applied
  std::optional<uint64_t> source_digest;         // the source's, from its digest record
  // Postcopy (postcopy-ram agreed in the hello): the pages the source
  // discarded, to come after the switch; the RAM that waits for them; the
  // `mig-fault` thread that asks for the ones the guest touches.
  bool postcopy = false;
  // postcopy-preempt: the channel requested pages arrive on, read by the
  // `mig-preempt` thread in postcopy.
  migration_channel* preempt = nullptr;
  std::thread preempt_thread;
  bool postcopy_run_seen = false;
  bool shared_checked = false; // x-ignore-shared: the file here is the source's
  // mapped-ram: the file's index, checked before any page is read.
  std::optional<mapped_ram_index> mapped;
  unique_fd mapped_fd;
  uint64_t awaited_count = 0; // as the source counted them
  dirty_bitmap awaited{0};
  std::unique_ptr<userfault_region> region;
  std::unique_ptr<postcopy_blocktime> blocktime; // with the postcopy-blocktime capability
  std::atomic<bool> guest_runs_here{false};      // go arrived: the only running copy is here
  std::atomic<uint64_t> awaited_placed{0};
  // release-ram (the source's): owed pages already reported placed, by the
  // `mig-fault` thread every quarter second.
  dirty_bitmap reported{0};
  std::thread fault_thread;
  std::atomic<bool> fault_stop{false};
  std::mutex wait_mtx;                                          // waiting
  std::unordered_map<uint64_t, clock_type::time_point> waiting; // requested, not placed
  std::vector<uint32_t> request_latency_us; // under wait_mtx, the first 1 Mi requests
  // Recovery: the acceptor migrate-recover opened, for the paused engine
  // (under mtx; the engine waits on recover_cv).
  std::unique_ptr<channel_acceptor> recover_acceptor;
  std::condition_variable recover_cv;
  // COLO (destination_colo.cpp): the checkpoint sequence as this side sees
  // it, x-colo-lost-heartbeat's request, whether this side took over.
  mig::colo_exchange colo_x;
  std::atomic<bool> colo_lost{false};
  std::atomic<bool> colo_noticed{false}; // the COLO thread took colo_lost
  bool colo_took_over = false;
  // Compare mode (destination_colo_compare.cpp): the guest runs here too,
  // from each checkpoint; the RAM and vCPU state of the last one, to go
  // back to; held from checkpoint-request to the commit; output positions
  // (the primary's count): where the last checkpoint's run began, what was
  // sent, what a reader has seen, the next checkpoint's base.
  bool colo_compare = false;
  bool colo_started = false;
  std::vector<uint8_t> colo_cache;
  std::vector<uint8_t> colo_cpu;
  guest::pause_guard colo_hold;
  uint64_t colo_base = 0, colo_sent = 0, colo_released = 0, colo_next_base = 0;
  std::atomic<uint64_t> checkpoints{0};
  // Where the engine is; stepped by its own thread only (read by tests).
  std::atomic<destination_phase> phase{destination_phase::listen};
  std::thread thread;

  impl(guest& gu, incoming_migration p, migration_hooks h)
    : g(gu), plan(std::move(p)), hooks(std::move(h)),
      maybe_nonzero((g.memory().pages() + 63) / 64) {}

  void note_failure(const caf::error& e) {
    {
      std::lock_guard lk{mtx};
      if (error.empty())
        error = describe(e);
    }
    stop = true;
    std::lock_guard lk{mtx};
    if (listener)
      listener->interrupt();
    for (auto& c : channels)
      c->interrupt();
  }

  void mark_present_data();
  // tls-authz: why the TLS peer on `ch` is not let in, if it is not.
  std::optional<std::string> authz_denied(const migration_channel& ch) const {
    if (!plan.tls || !plan.check_authz)
      return std::nullopt;
    const std::string dn = ch.peer_dn();
    if (plan.authz_identity && dn == *plan.authz_identity)
      return std::nullopt;
    return "TLS x509 authz check for " + (dn.empty() ? std::string{"(no certificate)"} : dn) +
           " is denied";
  }
  caf::expected<mig::hello> check_hello(migration_channel& ch, std::vector<uint8_t>& buf);
  caf::expected<void> apply(std::span<const uint8_t> payload);
  // A page record whose pages are read straight into guest RAM (no copy
  // through a buffer); `head` keeps its prefix and entries.
  caf::expected<void> receive_pages(migration_channel& ch, const mig::record_header& h,
                                    std::vector<uint8_t>& head);
  void applied(const mig::page_batch& b);
  void note_applied(uint64_t pfn, bool zero);
  caf::expected<void> apply_deltas(std::span<const uint8_t> payload); // XBZRLE
  caf::expected<void> receive_channel(migration_channel& ch);
  caf::expected<void> execute();
  caf::expected<destination_event> run_phase(destination_phase p);
  caf::expected<destination_event> accept_main();
  caf::expected<destination_event> handshake();
  caf::expected<destination_event> open_channels();
  caf::expected<std::unique_ptr<migration_channel>> accept_channel();
  caf::expected<destination_event> receive_main();
  caf::expected<destination_event> load_state();
  caf::expected<destination_event> await_go();
  // COLO: the first copy loaded, checkpoint-ready; then checkpoints staged
  // and committed whole until the primary is lost (failover: the guest runs
  // here from the last whole checkpoint) or ends COLO itself.
  caf::expected<destination_event> colo_begin();
  caf::expected<destination_event> colo();
  std::optional<caf::expected<destination_event>>
  colo_message(std::span<const uint8_t> buf, checkpoint_staging& staging, uint64_t& arrived);
  caf::expected<void> colo_send(mig::colo_message m, uint64_t value);
  destination_event colo_failover(std::string_view reason, const caf::error& why);
  caf::error colo_fail(const std::string& why);
  destination_event colo_take_over();
  void colo_compare_request();
  std::optional<std::string> colo_compare_commit(const std::vector<uint8_t>& blob);
  caf::expected<void> colo_forward_output();
  caf::expected<void> colo_take_output(std::span<const uint8_t> payload);
  void colo_compare_take_over();
  void colo_compare_stop();
  caf::expected<destination_event> colo_link_failed(const caf::error& why,
                                                    clock_type::time_point heard);
  std::optional<caf::error> colo_primary_ended();
  caf::error colo_primary_runs(std::span<const uint8_t> abort_payload);
  // Protocol faults (no link ones) as the reason text.
  std::optional<std::string> stage_pages(std::span<const uint8_t> buf, checkpoint_staging& staging,
                                         uint64_t& arrived);
  std::optional<std::string> commit_checkpoint(checkpoint_staging& staging);
  caf::expected<void> check_digest();
  caf::expected<void> check_shared_ram(const std::vector<uint8_t>& buf);
  // mapped-ram: the file's index read and the main channel moved to its
  // state region; then the pages read into the guest.
  caf::expected<void> open_mapped_file(migration_channel*& ch);
  caf::expected<void> load_mapped_pages();
  // Postcopy.
  caf::expected<void> note_discard(std::span<const uint8_t> payload);
  caf::expected<destination_event> postcopy_load();
  caf::expected<destination_event> receive_postcopy();
  caf::expected<void> place_batch(migration_channel& ch, const mig::record_header& h,
                                  std::vector<uint8_t>& head, std::vector<uint8_t>& staging);
  caf::expected<void> place_until_end(migration_channel& ch);
  void placed_one(const mig::postcopy_page& pg, clock_type::time_point now);
  caf::expected<migration_channel*> admit_channel();
  caf::expected<migration_channel*> accept_preempt(bool resume);
  void join_preempt() {
    if (preempt_thread.joinable())
      preempt_thread.join();
  }
  void watch_faults();
  caf::expected<void> ask_again();
  void report_requests();
  void after_link_lost(const caf::error& why);
  caf::expected<destination_event> postcopy_paused();
  caf::expected<destination_event> postcopy_recover();
  // postcopy-received records: the owed pages placed (not yet in `skip`,
  // which gains them, when given).
  caf::expected<void> send_received(dirty_bitmap* skip = nullptr);
  void stop_fault_thread() {
    fault_stop = true;
    if (fault_thread.joinable())
      fault_thread.join();
  }
  std::string disagreement() const;
  caf::expected<bool> main_record(const mig::record_header& h, const std::vector<uint8_t>& buf);
  void join_receivers() {
    for (auto& t : receivers)
      t.join();
    receivers.clear();
  }
  void run();
};

} // namespace ferry
