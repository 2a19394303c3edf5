#include "agent/vmm/synthetic_guest.hpp"

#include "agent/vmm/blob_bytes.hpp"
#include "agent/vmm/memory_layout.hpp"
#include "common/error.hpp"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>

namespace ferry {

namespace {

// Blob: u32 magic "FSYN" | u16 version | u16 0 | u64 next page | u64 passes.
constexpr uint32_t blob_magic = 0x4e595346;
constexpr uint16_t blob_version = 1;
constexpr size_t blob_size = 24;
// Pages bumped between two looks at the clock and the pause flag.
constexpr uint64_t batch_pages = 64;

} // namespace

synthetic_guest::synthetic_guest(guest_memory mem, synthetic_guest_config cfg)
  : memory_(std::move(mem)), log_(memory_.pages()), cfg_(std::move(cfg)), serial_(cfg_.serial) {
  cfg_.serial = nullptr; // serial_ owns it now
}

synthetic_guest::~synthetic_guest() {
  worker_.stop();
}

caf::expected<std::unique_ptr<synthetic_guest>>
synthetic_guest::create(synthetic_guest_config cfg) {
  auto mem = guest_memory::create(cfg.memory);
  if (!mem)
    return mem.error();
  if (cfg.ws_start % page_size != 0 || cfg.ws_start + cfg.ws_pages * page_size > mem->size())
    return make_ferry_error(errc::invalid_argument,
                            "working set must be page aligned and inside guest RAM");
  if (cfg.pass_counter_address && *cfg.pass_counter_address + 4 > mem->size())
    return make_ferry_error(errc::invalid_argument, "pass counter outside guest RAM");
  std::unique_ptr<synthetic_guest> g{new synthetic_guest(std::move(*mem), std::move(cfg))};
  if (auto ok = g->memory_.load_boot_sector(g->cfg_.boot_sector); !ok)
    return ok.error();
  return g;
}

caf::expected<void> synthetic_guest::do_start(bool paused) {
  {
    std::lock_guard lk{mtx_};
    pause_req_ = paused;
    started_ = true;
  }
  worker_.start("dirtier", [this] { loop(); });
  return {};
}

void synthetic_guest::loop() {
  dirtier_tid_ = static_cast<int>(::gettid());
  using clock = std::chrono::steady_clock;
  auto t0 = clock::now();
  uint64_t done = 0; // pages bumped since t0, for pacing
  for (;;) {
    {
      std::unique_lock lk{mtx_};
      // Without a working set there is nothing to do after the boot.
      auto idle = [this] { return pause_req_ || (cfg_.ws_pages == 0 && booted_); };
      if (idle() && !worker_.stopping()) {
        while (idle() && !worker_.stopping()) {
          parked_ = true;
          worker_.wake();
          worker_.wait(lk);
        }
        t0 = clock::now();
        done = 0;
      }
      if (worker_.stopping())
        break;
      parked_ = false;
    }
    if (!booted_) {
      // Inside the running stretch: a pause waits for the boot to finish.
      if (cfg_.boot)
        cfg_.boot(memory_, log_, serial_);
      std::lock_guard lk{mtx_};
      booted_ = true;
      t0 = clock::now();
      done = 0;
      continue;
    }
    // A batch always completes before the thread parks, so a pause never
    // sees a counter half-way through an update.
    for (uint64_t i = 0; i < batch_pages; ++i) {
      const uint64_t addr = cfg_.ws_start + next_ * page_size;
      uint32_t c;
      std::memcpy(&c, memory_.data() + addr, 4);
      ++c;
      std::memcpy(memory_.data() + addr, &c, 4);
      log_.mark_page(addr / page_size);
      if (++next_ == cfg_.ws_pages) {
        next_ = 0;
        end_pass();
      }
    }
    done += batch_pages;
    if (cfg_.dirty_rate != 0) {
      const auto due =
        t0 + std::chrono::duration_cast<clock::duration>(std::chrono::duration<double>(
               static_cast<double>(done) / static_cast<double>(cfg_.dirty_rate)));
      std::unique_lock lk{mtx_};
      worker_.wait_until(lk, due, [this] { return pause_req_; });
    }
  }
  std::lock_guard lk{mtx_};
  parked_ = true;
  worker_.wake();
}

void synthetic_guest::end_pass() {
  passes_.fetch_add(1, std::memory_order_relaxed);
  if (!cfg_.pass_counter_address)
    return;
  // The count lives in guest memory, as the test guest keeps it, so it
  // travels with a migration and a dump shows it.
  const uint64_t at = *cfg_.pass_counter_address;
  uint32_t count;
  std::memcpy(&count, memory_.data() + at, 4);
  ++count;
  std::memcpy(memory_.data() + at, &count, 4);
  log_.mark_page(at / page_size);
  if (cfg_.report_every == 0 || count % cfg_.report_every != 0)
    return;
  char line[24];
  const int n = std::snprintf(line, sizeof line, "pass %08x\n", count);
  serial_.write_text({line, static_cast<size_t>(n)});
}

void synthetic_guest::do_pause() {
  std::unique_lock lk{mtx_};
  pause_req_ = true;
  worker_.wake();
  if (started_)
    worker_.wait(lk, [this] { return parked_; });
}

void synthetic_guest::do_resume() {
  std::lock_guard lk{mtx_};
  pause_req_ = false;
  worker_.wake();
}

caf::expected<std::vector<uint8_t>> synthetic_guest::save_cpu_state() {
  if (state() == run_state::running)
    return make_ferry_error(errc::bad_run_state,
                            "state can only be saved while the guest is paused");
  std::lock_guard lk{mtx_};
  std::vector<uint8_t> out;
  append_bytes(out, blob_magic);
  append_bytes(out, blob_version);
  append_bytes(out, uint16_t{0});
  append_bytes(out, next_);
  append_bytes(out, passes_.load());
  return out;
}

caf::expected<void> synthetic_guest::load_cpu_state(std::span<const uint8_t> blob) {
  if (state() == run_state::running)
    return make_ferry_error(errc::bad_run_state,
                            "state can only be loaded while the guest is paused");
  if (blob.size() != blob_size)
    return make_ferry_error(errc::bad_state_blob, "dirtier state: wrong size");
  const auto magic = load_bytes<uint32_t>(blob.data());
  const auto version = load_bytes<uint16_t>(blob.data() + 4);
  const auto next = load_bytes<uint64_t>(blob.data() + 8);
  const auto passes = load_bytes<uint64_t>(blob.data() + 16);
  if (magic != blob_magic || version != blob_version)
    return make_ferry_error(errc::bad_state_blob, "dirtier state: bad magic or version");
  if (next >= cfg_.ws_pages && cfg_.ws_pages != 0)
    return make_ferry_error(errc::bad_state_blob,
                            "dirtier state: position outside the working set");
  std::lock_guard lk{mtx_};
  next_ = next;
  passes_.store(passes);
  booted_ = true;
  return {};
}

} // namespace ferry
