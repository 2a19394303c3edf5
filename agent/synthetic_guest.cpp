#include "agent/synthetic_guest.hpp"

#include "agent/agent_error.hpp"
#include "agent/memory_layout.hpp"

#include <pthread.h>

#include <chrono>
#include <cstring>

namespace ferry {

namespace {

constexpr uint64_t boot_address = 0x7c00;
// Blob: u32 magic "FSYN" | u16 version | u16 0 | u64 next page | u64 passes.
constexpr uint32_t blob_magic = 0x4e595346;
constexpr uint16_t blob_version = 1;
constexpr size_t blob_size = 24;
// Pages bumped between two looks at the clock and the pause flag.
constexpr uint64_t batch_pages = 64;

} // namespace

synthetic_guest::synthetic_guest(guest_memory mem, synthetic_guest_config cfg)
  : memory_(std::move(mem)), log_(memory_.pages()), cfg_(std::move(cfg)) {}

synthetic_guest::~synthetic_guest() {
  {
    std::lock_guard lk{mtx_};
    quit_ = true;
    cv_.notify_all();
  }
  if (thread_.joinable())
    thread_.join();
}

caf::expected<std::unique_ptr<synthetic_guest>>
synthetic_guest::create(synthetic_guest_config cfg) {
  auto mem = guest_memory::create(cfg.memory);
  if (!mem)
    return mem.error();
  if (cfg.ws_start % page_size != 0 || cfg.ws_start + cfg.ws_pages * page_size > mem->size())
    return make_agent_error(agent_errc::invalid_argument,
                            "working set must be page aligned and inside guest RAM");
  if (cfg.boot_sector.size() > 512)
    return make_agent_error(agent_errc::invalid_argument, "boot sector larger than 512 bytes");
  std::unique_ptr<synthetic_guest> g{new synthetic_guest(std::move(*mem), std::move(cfg))};
  if (!g->cfg_.boot_sector.empty()) {
    auto dst = g->memory_.range(boot_address, g->cfg_.boot_sector.size());
    if (dst.empty())
      return make_agent_error(agent_errc::invalid_argument,
                              "guest RAM too small for a boot sector at 0x7c00");
    std::memcpy(dst.data(), g->cfg_.boot_sector.data(), dst.size());
  }
  return g;
}

caf::expected<void> synthetic_guest::do_start(bool paused) {
  std::lock_guard lk{mtx_};
  pause_req_ = paused;
  thread_ = std::thread{[this] { loop(); }};
  return {};
}

void synthetic_guest::loop() {
  ::pthread_setname_np(::pthread_self(), "dirtier");
  using clock = std::chrono::steady_clock;
  auto t0 = clock::now();
  uint64_t done = 0; // pages bumped since t0, for pacing
  for (;;) {
    {
      std::unique_lock lk{mtx_};
      if (pause_req_ || (cfg_.ws_pages == 0 && !quit_)) {
        while ((pause_req_ || cfg_.ws_pages == 0) && !quit_) {
          parked_ = true;
          cv_.notify_all();
          cv_.wait(lk);
        }
        t0 = clock::now();
        done = 0;
      }
      if (quit_)
        break;
      parked_ = false;
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
        passes_.fetch_add(1, std::memory_order_relaxed);
      }
    }
    done += batch_pages;
    if (cfg_.dirty_rate != 0) {
      const auto due =
        t0 + std::chrono::duration_cast<clock::duration>(std::chrono::duration<double>(
               static_cast<double>(done) / static_cast<double>(cfg_.dirty_rate)));
      std::unique_lock lk{mtx_};
      cv_.wait_until(lk, due, [this] { return pause_req_ || quit_; });
    }
  }
  std::lock_guard lk{mtx_};
  parked_ = true;
  cv_.notify_all();
}

void synthetic_guest::do_pause() {
  std::unique_lock lk{mtx_};
  pause_req_ = true;
  cv_.notify_all();
  if (thread_.joinable())
    cv_.wait(lk, [this] { return parked_; });
}

void synthetic_guest::do_resume() {
  std::lock_guard lk{mtx_};
  pause_req_ = false;
  cv_.notify_all();
}

caf::expected<std::vector<uint8_t>> synthetic_guest::save_cpu_state() {
  if (state() == run_state::running)
    return make_agent_error(agent_errc::bad_run_state,
                            "state can only be saved while the guest is paused");
  std::lock_guard lk{mtx_};
  std::vector<uint8_t> out(blob_size, 0);
  const uint64_t passes = passes_.load();
  std::memcpy(out.data(), &blob_magic, 4);
  std::memcpy(out.data() + 4, &blob_version, 2);
  std::memcpy(out.data() + 8, &next_, 8);
  std::memcpy(out.data() + 16, &passes, 8);
  return out;
}

caf::expected<void> synthetic_guest::load_cpu_state(std::span<const uint8_t> blob) {
  if (state() == run_state::running)
    return make_agent_error(agent_errc::bad_run_state,
                            "state can only be loaded while the guest is paused");
  uint32_t magic = 0;
  uint16_t version = 0;
  uint64_t next = 0;
  uint64_t passes = 0;
  if (blob.size() != blob_size)
    return make_agent_error(agent_errc::bad_state_blob, "dirtier state: wrong size");
  std::memcpy(&magic, blob.data(), 4);
  std::memcpy(&version, blob.data() + 4, 2);
  std::memcpy(&next, blob.data() + 8, 8);
  std::memcpy(&passes, blob.data() + 16, 8);
  if (magic != blob_magic || version != blob_version)
    return make_agent_error(agent_errc::bad_state_blob, "dirtier state: bad magic or version");
  if (next >= cfg_.ws_pages && cfg_.ws_pages != 0)
    return make_agent_error(agent_errc::bad_state_blob,
                            "dirtier state: position outside the working set");
  std::lock_guard lk{mtx_};
  next_ = next;
  passes_.store(passes);
  return {};
}

} // namespace ferry
