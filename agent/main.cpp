// ferry-agent: one agent per host.
//   ferry-agent --config agent.toml      daemon mode: many guests, one host actor
//   ferry-agent vm -m 256M -drive ...    one guest with QEMU-compatible flags and QMP
// Daemon mode runs each of its guests as a `ferry-agent vm` child process.

#include "agent/cli/vm_config.hpp"
#include "agent/daemon/daemon.hpp"
#include "agent/qmp/qmp_monitor.hpp"
#include "agent/qmp/qmp_server.hpp"
#include "agent/testguest/guest_image.hpp"
#include "agent/testguest/pattern.hpp"
#include "agent/transport/migration_address.hpp"
#include "agent/vmm/kvm/kvm_guest.hpp"
#include "agent/vmm/synthetic_guest.hpp"
#include "common/error.hpp"
#include "protocol/qmp_wire.hpp"

#include <signal.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>

namespace {

using namespace ferry;

constexpr const char* usage =
  "usage: ferry-agent --config agent.toml\n"
  "       ferry-agent vm -m SIZE -drive file=IMG[,format=raw|qcow2][,node-name=N]\n"
  "                      [-blockdev "
  "driver=qcow2|raw,node-name=N,file.driver=file,file.filename=IMG]\n"
  "                      -qmp unix:PATH,server=on,wait=off\n"
  "                      [-name NAME] [-uuid UUID] [-smp N] [-serial file:PATH|stdio]\n"
  "                      [-object memory-backend-file,id=ID,size=SIZE,mem-path=FILE,share=on|off\n"
  "                       | -object memory-backend-ram,id=ID,size=SIZE] [-machine "
  "memory-backend=ID]\n"
  "                      [-accel kvm[,dirty-ring-size=N] | -accel "
  "none[,dirty-rate=N,ws-start=A,ws-pages=N]]\n"
  "                      [-S] [-incoming defer|tcp:HOST:PORT|unix:PATH|exec:CMD|file:PATH]\n";

int fail(const std::string& msg) {
  std::fprintf(stderr, "ferry-agent: %s\n", msg.c_str());
  return 1;
}

// What the test guest does before its dirtying loop (counter_guest.S): fill
// its pattern unless a probe of the first and last pattern page finds it
// there, then report "ready".
void testguest_boot(const testguest::guest_params& p, guest_memory& ram, software_dirty_log& log,
                    serial_port& serial) {
  const uint64_t first = p.pattern_start / testguest::page_bytes;
  const uint64_t top = std::min<uint64_t>(p.ram_top, ram.size()) / testguest::page_bytes;
  if (top <= first)
    return serial.write_text("ready\n");
  const uint64_t last = (top - 1) & ~uint64_t{3}; // the last non-zero-class page
  auto present = [&](uint64_t page) {
    return testguest::page_matches(ram.data() + page * testguest::page_bytes, page, p.seed);
  };
  if (!present(first) || !present(last)) {
    serial.write_text("fill\n");
    testguest::fill_pattern(ram.bytes(), p);
    log.mark(first * testguest::page_bytes, (top - first) * testguest::page_bytes);
  }
  serial.write_text("ready\n");
}

// The -serial sink (nullptr without one); the guest owns it afterwards.
caf::expected<std::FILE*> open_serial(const vm_config& cfg) {
  if (cfg.serial == vm_config::serial_kind::stdio)
    return stdout;
  if (cfg.serial != vm_config::serial_kind::file)
    return nullptr;
  std::FILE* f = std::fopen(cfg.serial_path.c_str(), "w");
  if (f == nullptr)
    return make_system_error("could not open serial device '" + cfg.serial_path + "'");
  return f;
}

caf::expected<std::unique_ptr<guest>> make_guest(const vm_config& cfg,
                                                 std::vector<uint8_t> sector) {
  FERRY_TRY(serial, open_serial(cfg));
  // An incoming guest whose RAM is a shared file may find itself there
  // already (x-ignore-shared, cpr-reboot): nothing is written into the file
  // before the stream says what the guest holds. The image still tells an
  // -accel none guest its test parameters.
  const bool keep_ram =
    cfg.incoming && cfg.backend.type == memory_backend::kind::file && cfg.backend.share;
  if (cfg.accel == vm_config::accel_kind::none) {
    synthetic_guest_config sc;
    sc.memory = cfg.backend;
    sc.serial = serial;
    // A test-guest image tells the dirtier what its KVM twin would dirty,
    // where it counts its passes and how often it reports them.
    if (auto p = testguest::read_params(sector)) {
      sc.ws_start = p->ws_start;
      sc.ws_pages = p->ws_pages;
      sc.pass_counter_address = testguest::status_address;
      sc.report_every = p->report_every;
      sc.boot = [params = *p](guest_memory& ram, software_dirty_log& log, serial_port& port) {
        testguest_boot(params, ram, log, port);
      };
    }
    if (!keep_ram)
      sc.boot_sector = std::move(sector);
    if (cfg.ws_start)
      sc.ws_start = *cfg.ws_start;
    if (cfg.ws_pages)
      sc.ws_pages = *cfg.ws_pages;
    sc.dirty_rate = cfg.dirty_rate.value_or(0);
    FERRY_TRY(g, synthetic_guest::create(std::move(sc)));
    return std::unique_ptr<guest>{std::move(g)};
  }
  kvm_guest_config kc;
  kc.memory = cfg.backend;
  kc.vcpus = cfg.smp;
  if (!keep_ram)
    kc.boot_sector = std::move(sector);
  kc.serial = serial;
  if (cfg.dirty_ring_size != 0) {
    kc.kvm.dirty_log = dirty_log_kind::ring;
    kc.kvm.dirty_ring_entries = cfg.dirty_ring_size;
  }
  FERRY_TRY(g, kvm_guest::create(std::move(kc)));
  return std::unique_ptr<guest>{std::move(g)};
}

// An incoming migration ended the agent (exit-on-error): why, on stderr.
void report_failed_load(qmp_monitor& monitor) {
  auto info = monitor.execute("query-migrate", {});
  const auto* v = std::get_if<boost::json::value>(&info);
  const auto* desc =
    v != nullptr && v->is_object() ? v->as_object().if_contains("error-desc") : nullptr;
  std::fprintf(stderr, "ferry-agent: load of migration failed: %s\n",
               desc != nullptr && desc->is_string() ? desc->as_string().c_str() : "unknown error");
}

int run_vm(const std::vector<std::string>& args) {
  auto cfg = parse_vm_args(args);
  if (!cfg)
    return fail(describe(cfg.error()));
  auto disks = block_devices::open(cfg->drives);
  if (!disks)
    return fail(describe(disks.error()));
  auto boot = (*disks)->boot_sector();
  if (!boot)
    return fail(describe(boot.error()));
  std::vector<uint8_t> sector = std::move(*boot);
  // The whole command line is checked before any device opens, so a bad
  // flag is reported as such on a host without /dev/kvm too.
  if (cfg->incoming && *cfg->incoming != "defer") {
    const auto address = parse_migration_uri(*cfg->incoming);
    if (const auto* err = std::get_if<std::string>(&address))
      return fail("-incoming " + *cfg->incoming + ": " + *err);
  }

  // SIGINT/SIGTERM are taken synchronously by the main thread only: block
  // them before any thread exists so every thread inherits the mask.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGHUP);
  // QMP quit wakes the main thread with it at once (a migrated source is
  // retired while its migration's caller waits).
  constexpr int wake_signal = SIGUSR2; // SIGUSR1 kicks vCPUs (vcpu_thread)
  sigaddset(&stop_signals, wake_signal);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  // A migration peer or exec: command that goes away must fail a write, not
  // kill the agent.
  ::signal(SIGPIPE, SIG_IGN);

  // An incoming guest's RAM is about to be overwritten: start populating it
  // now, ahead of the pages. (Its boot sector is still loaded: an -accel none
  // guest reads its test parameters from it.)
  if (cfg->incoming && cfg->backend.type == memory_backend::kind::ram)
    cfg->backend.prefill = true;
  auto g = make_guest(*cfg, std::move(sector));
  if (!g)
    return fail(describe(g.error()));
  auto server = qmp_server::create(cfg->qmp);
  if (!server)
    return fail("-qmp: " + describe(server.error()));

  std::atomic<bool> quit{false};
  std::atomic<int> exit_status{0};
  const auto end_main_loop = [&] {
    quit = true;
    ::kill(::getpid(), wake_signal);
  };
  qmp_monitor monitor{**g,
                      {cfg->name, cfg->uuid},
                      [&](std::string line) { (*server)->broadcast(std::move(line)); },
                      end_main_loop};
  monitor.set_objects(cfg->tls_creds, cfg->authz);
  monitor.set_colo_fence(cfg->colo_fence_ms);
  monitor.set_colo_compare(cfg->colo_compare);
  monitor.set_block_devices(disks->get());
  monitor.set_exit_handler([&](int status) {
    exit_status = status;
    end_main_loop();
  });
  if (cfg->incoming) {
    // The guest waits for its memory and CPUs to arrive.
    monitor.expect_incoming(!cfg->start_paused);
    if (*cfg->incoming != "defer")
      if (auto err = monitor.start_incoming(*cfg->incoming))
        return fail("-incoming " + *cfg->incoming + ": " + *err);
  }
  // As QEMU without -S: the guest runs before the monitor answers a client.
  if (!cfg->start_paused && !cfg->incoming)
    if (auto ok = (*g)->start(); !ok)
      return fail(describe(ok.error()));
  (*server)->start(monitor);

  // No timeout: whoever sets `quit` also sends wake_signal, and a host with
  // hundreds of idle guests should not wake each of them ten times a second.
  const char* reason = "host-qmp-quit";
  while (!quit) {
    const int sig = ::sigwaitinfo(&stop_signals, nullptr);
    if (sig > 0 && sig != wake_signal) {
      reason = "host-signal";
      break;
    }
  }
  // Nothing runs the guest again, whatever pauses the migration engines
  // and the monitor release as they end: a migrated source's stale copy
  // would otherwise run for a moment, into RAM a shared file gives the
  // destination (x-ignore-shared, cpr-reboot).
  (*g)->halt();
  (*server)->broadcast(
    qmp::event("SHUTDOWN", boost::json::object{{"guest", false}, {"reason", reason}}));
  if (exit_status != 0)
    report_failed_load(monitor);
  (*server)->stop();
  return exit_status;
}

} // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty() || args[0] == "-h" || args[0] == "--help") {
    std::fputs(usage, args.empty() ? stderr : stdout);
    return args.empty() ? 1 : 0;
  }
  if (args[0] == "--version" || args[0] == "-version") {
    std::puts("ferry-agent 0.1.0 (QMP compatible with QEMU 9.1)");
    return 0;
  }
  if (args[0] == "--config") {
    if (args.size() != 2)
      return fail(std::string{"--config takes one file\n"} + usage);
    // Guests are started from this very binary.
    std::error_code ec;
    auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
    if (ec)
      return fail("cannot find my own executable: " + ec.message());
    return run_daemon(args[1], exe.string());
  }
  if (args[0] != "vm")
    return fail("unknown mode '" + args[0] + "' (expected 'vm' or '--config FILE')\n" + usage);
  return run_vm({args.begin() + 1, args.end()});
}
