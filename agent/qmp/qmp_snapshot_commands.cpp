// snapshot-save, snapshot-load and snapshot-delete (QEMU 9.1's VM snapshots
// as jobs), query-jobs and job-dismiss. The work runs on the job's thread,
// one job at a time (the disks' lock), and every error ends the job with
// it, as in QEMU; only a bad job id is refused at once.
//
// The VM state is a Ferry migration stream of the paused guest
// (vm_state_file), stored in the `vmstate` node's internal qcow2 snapshot.
// The guest is paused only while its state is written to a scratch file;
// QEMU keeps it paused until the disks' snapshots are made as well.

#include "agent/migration/vm_state_file.hpp"
#include "agent/qmp/qmp_args.hpp"
#include "agent/qmp/qmp_monitor.hpp"
#include "common/error.hpp"
#include "common/log.hpp"
#include "common/unique_fd.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <thread>

namespace ferry {

namespace json = boost::json;
using namespace qmp_args;

namespace {

caf::error job_error(const std::string& desc) {
  return make_ferry_error(errc::invalid_argument, desc);
}

std::vector<std::string> strings(const json::value& v) {
  std::vector<std::string> out;
  for (const auto& e : v.as_array())
    out.emplace_back(e.as_string());
  return out;
}

// An unnamed file for the VM state next to the image (same filesystem),
// else in /tmp.
caf::expected<unique_fd> scratch_file(const std::string& near) {
  const std::string dir = std::filesystem::path{near}.parent_path().string();
  for (const std::string& d : {dir.empty() ? std::string{"."} : dir, std::string{"/tmp"}}) {
    unique_fd fd{::open(d.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600)};
    if (fd)
      return fd;
  }
  return make_system_error("snapshot: no scratch file for the VM state");
}

// Test-only: FERRY_FAULT_SNAPSHOT_MS=N in the agent's environment holds each
// snapshot job N ms before it works (a test restarts the orchestrator while
// one is under way), saying so on stderr so the test knows when.
void fault_delay() {
  if (const char* ms = std::getenv("FERRY_FAULT_SNAPSHOT_MS")) {
    log::warn("fault point: snapshot job under way; holding {} ms", ms);
    std::this_thread::sleep_for(std::chrono::milliseconds(std::strtoul(ms, nullptr, 10)));
  }
}

} // namespace

// The devices a snapshot job names, each a qcow2 node it may write.
caf::expected<std::vector<block_devices::device*>>
qmp_monitor::snapshot_devices(const std::vector<std::string>& names, const std::string* vmstate) {
  if (vmstate != nullptr && std::find(names.begin(), names.end(), *vmstate) == names.end())
    return job_error("vmstate block device '" + *vmstate + "' is not in the devices list");
  std::vector<block_devices::device*> out;
  for (const auto& n : names) {
    auto* d = disks_ != nullptr ? disks_->find(n) : nullptr;
    if (d == nullptr)
      return job_error("No block device node '" + n + "'");
    if (!d->qcow2)
      return job_error("Device '" + n + "' is writable but does not support snapshots");
    if (!d->read_only_why.empty())
      return job_error("Device '" + n + "' is read-only: " + d->read_only_why);
    out.push_back(d);
  }
  return out;
}

// Why the guest's state cannot be saved or loaded now, if so.
std::optional<std::string> qmp_monitor::snapshot_refusal() const {
  if (auto why = migration_.outgoing_refusal())
    return why;
  if (migration_.status(migration_side::destination) != migration_status::none &&
      migration_.status(migration_side::destination) != migration_status::completed)
    return "An incoming migration is in progress";
  return std::nullopt;
}

caf::expected<void> qmp_monitor::save_snapshot(const std::string& tag, const std::string& vmstate,
                                               const std::vector<std::string>& names) {
  std::lock_guard disks{disks_ != nullptr ? disks_->lock() : no_disks_};
  FERRY_TRY(devs, snapshot_devices(names, &vmstate));
  for (auto* d : devs)
    if (d->qcow2->find_snapshot(tag) != nullptr)
      return job_error("Snapshot '" + tag + "' already exists in one or more devices");
  if (auto why = snapshot_refusal())
    return job_error(*why);
  auto* vm_dev = disks_->find(vmstate);
  auto scratch = scratch_file(vm_dev->spec.path);
  if (!scratch)
    return scratch.error();
  // Paused only while the state is written out: Ferry's guests never write
  // their disks (a drive is read at boot), so the disks' snapshots taken
  // after the guest runs again hold what they held at that moment.
  snapshot_running_ = true;
  const bool was_running = guest_.state() == run_state::running;
  auto hold = guest_.pause();
  if (was_running)
    emit_(qmp::event("STOP"));
  auto saved = save_vm_state(guest_, scratch->get(), &migration_.threads());
  hold = {};
  snapshot_running_ = false;
  if (was_running && guest_.state() == run_state::running)
    emit_(qmp::event("RESUME"));
  if (!saved)
    return saved.error();
  struct stat st {};
  if (::fstat(scratch->get(), &st) != 0)
    return make_system_error("snapshot: fstat");
  std::vector<block_devices::device*> made;
  for (auto* d : devs) {
    const bool has_state = d == vm_dev;
    auto ok = d->qcow2->create_snapshot(tag, has_state ? scratch->get() : -1,
                                        has_state ? static_cast<uint64_t>(st.st_size) : 0, 0);
    if (!ok) {
      for (auto* m : made) // all or none
        (void) m->qcow2->delete_snapshot(tag);
      return job_error("Could not create snapshot '" + tag + "' on '" + d->spec.node_name +
                       "': " + describe(ok.error()));
    }
    made.push_back(d);
  }
  return {};
}

caf::expected<void> qmp_monitor::load_snapshot(const std::string& tag, const std::string& vmstate,
                                               const std::vector<std::string>& names) {
  std::lock_guard disks{disks_ != nullptr ? disks_->lock() : no_disks_};
  FERRY_TRY(devs, snapshot_devices(names, &vmstate));
  for (auto* d : devs)
    if (d->qcow2->find_snapshot(tag) == nullptr)
      return job_error("Snapshot '" + tag + "' does not exist in one or more devices");
  auto* vm_dev = disks_->find(vmstate);
  if (vm_dev->qcow2->find_snapshot(tag)->vm_state_size == 0)
    return job_error("This is a disk-only snapshot. Revert to it offline using qemu-img");
  if (auto why = snapshot_refusal())
    return job_error(*why);
  auto scratch = scratch_file(vm_dev->spec.path);
  if (!scratch)
    return scratch.error();
  // The VM state is read out (and so checked against the image) before the
  // guest is touched.
  FERRY_TRY_VOID(vm_dev->qcow2->read_vmstate(tag, scratch->get()));
  snapshot_running_ = true;
  const bool was_running = guest_.state() == run_state::running;
  auto hold = guest_.pause();
  if (was_running)
    emit_(qmp::event("STOP"));
  for (auto* d : devs)
    if (auto ok = d->qcow2->revert_to(tag); !ok) {
      snapshot_running_ = false;
      hold = {};
      if (was_running && guest_.state() == run_state::running)
        emit_(qmp::event("RESUME"));
      return job_error("Could not revert '" + d->spec.node_name + "' to '" + tag +
                       "': " + describe(ok.error()));
    }
  auto ok = load_vm_state(guest_, scratch->get(), &migration_.threads());
  snapshot_running_ = false;
  if (!ok) {
    // Half a state: the guest must not run on it until someone says so
    // (`cont`), as QEMU leaves it stopped after a failed load.
    std::lock_guard lk{failed_load_mtx_};
    failed_load_hold_ = std::move(hold);
    return job_error("Error while loading VM state: " + describe(ok.error()));
  }
  hold = {};
  if (was_running && guest_.state() == run_state::running)
    emit_(qmp::event("RESUME"));
  return {};
}

caf::expected<void> qmp_monitor::delete_snapshot(const std::string& tag,
                                                 const std::vector<std::string>& names) {
  std::lock_guard disks{disks_ != nullptr ? disks_->lock() : no_disks_};
  FERRY_TRY(devs, snapshot_devices(names));
  // As QEMU: a device without the snapshot is skipped.
  for (auto* d : devs)
    if (d->qcow2->find_snapshot(tag) != nullptr)
      if (auto ok = d->qcow2->delete_snapshot(tag); !ok)
        return job_error("Could not delete snapshot '" + tag + "' on '" + d->spec.node_name +
                         "': " + describe(ok.error()));
  return {};
}

qmp_result qmp_monitor::snapshot_save(const json::object& args) {
  const std::string tag{args.at("tag").as_string()};
  const std::string vmstate{args.at("vmstate").as_string()};
  const auto names = strings(args.at("devices"));
  if (auto why =
        jobs_.start(std::string{args.at("job-id").as_string()}, "snapshot-save", [=, this] {
          fault_delay();
          return save_snapshot(tag, vmstate, names);
        }))
    return generic(*why);
  return empty();
}

qmp_result qmp_monitor::snapshot_load(const json::object& args) {
  const std::string tag{args.at("tag").as_string()};
  const std::string vmstate{args.at("vmstate").as_string()};
  const auto names = strings(args.at("devices"));
  if (auto why = jobs_.start(std::string{args.at("job-id").as_string()}, "snapshot-load",
                             [=, this] { return load_snapshot(tag, vmstate, names); }))
    return generic(*why);
  return empty();
}

qmp_result qmp_monitor::snapshot_delete(const json::object& args) {
  const std::string tag{args.at("tag").as_string()};
  const auto names = strings(args.at("devices"));
  if (auto why = jobs_.start(std::string{args.at("job-id").as_string()}, "snapshot-delete",
                             [=, this] { return delete_snapshot(tag, names); }))
    return generic(*why);
  return empty();
}

qmp_result qmp_monitor::query_jobs(const json::object&) {
  return json::value(jobs_.query());
}

qmp_result qmp_monitor::job_dismiss(const json::object& args) {
  if (auto bad = check_args(args, {{"id", json::kind::string}}))
    return *bad;
  if (auto why = jobs_.dismiss(std::string{args.at("id").as_string()}))
    return generic(*why);
  return empty();
}

} // namespace ferry
