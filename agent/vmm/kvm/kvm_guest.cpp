#include "agent/vmm/kvm/kvm_guest.hpp"

#include "agent/vmm/blob_bytes.hpp"
#include "agent/vmm/kvm/kvm_dirty_bitmap.hpp"
#include "agent/vmm/kvm/kvm_dirty_ring.hpp"
#include "agent/vmm/kvm/vcpu.hpp"
#include "agent/vmm/kvm/vcpu_thread.hpp"
#include "common/error.hpp"

#include <cstring>

namespace ferry {

namespace {

// Guest CPU blob: u32 magic "FKVG" | u16 version | u16 vCPU count, then per
// vCPU: u8 activity | 3 bytes 0 | u32 length | vcpu_state blob.
constexpr uint32_t cpus_magic = 0x47564b46;
constexpr uint16_t cpus_version = 1;
constexpr uint8_t activity_max = 3;

} // namespace

kvm_guest::kvm_guest(guest_memory mem) : memory_(std::move(mem)), host_writes_(memory_.pages()) {}

kvm_guest::~kvm_guest() {
  threads_.clear(); // join vCPU threads before their vCPUs go
}

caf::expected<std::unique_ptr<kvm_guest>> kvm_guest::create(kvm_guest_config cfg) {
  if (cfg.vcpus == 0 || cfg.vcpus > 64)
    return make_ferry_error(errc::invalid_argument, "vCPU count must be between 1 and 64");
  auto mem = guest_memory::create(cfg.memory);
  if (!mem)
    return mem.error();
  std::unique_ptr<kvm_guest> g{new kvm_guest(std::move(*mem))};
  auto vm = kvm_vm::create(g->memory_, cfg.kvm);
  if (!vm)
    return vm.error();
  g->vm_ = std::move(*vm);
  g->io_ = std::make_unique<platform_io>(cfg.serial);

  dirty_tracker* accel = nullptr;
  if (cfg.kvm.dirty_log == dirty_log_kind::ring) {
    g->ring_ = std::make_unique<kvm_dirty_ring>(*g->vm_);
    accel = g->ring_.get();
  } else {
    g->bitmap_ = std::make_unique<kvm_dirty_bitmap>(*g->vm_);
    accel = g->bitmap_.get();
  }
  g->union_ =
    std::make_unique<union_dirty_tracker>(std::vector<dirty_tracker*>{accel, &g->host_writes_});

  if (auto ok = g->memory_.load_boot_sector(cfg.boot_sector); !ok)
    return ok.error();

  for (uint32_t i = 0; i < cfg.vcpus; ++i) {
    auto cpu = vcpu::create(*g->vm_, i, *g->io_, g->ring_.get());
    if (!cpu)
      return cpu.error();
    // Every vCPU starts at the boot sector: see -smp in docs/testguest.md.
    if (auto ok = (*cpu)->reset_real_mode(boot_sector_address); !ok)
      return ok.error();
    g->cpus_.push_back(std::move(*cpu));
  }
  kvm_guest* self = g.get();
  for (auto& cpu : g->cpus_) {
    auto t = std::make_unique<vcpu_thread>(*cpu, [self](vcpu_thread& th, vcpu_exit ex) {
      if (ex != vcpu_exit::shutdown && ex != vcpu_exit::failed)
        return;
      std::lock_guard lk{self->stop_mtx_};
      if (ex == vcpu_exit::failed) {
        self->stopped_ = run_state::internal_error;
        self->stop_reason_ =
          "vCPU " + std::to_string(th.cpu().index()) + ": " + th.cpu().last_error();
      } else if (self->stopped_ == run_state::running) {
        self->stopped_ = run_state::shutdown;
        self->stop_reason_ = "guest shutdown (triple fault or reset)";
      }
    });
    g->threads_.push_back(std::move(t));
  }
  return g;
}

caf::expected<void> kvm_guest::do_start(bool paused) {
  for (auto& t : threads_)
    t->start(paused);
  return {};
}

void kvm_guest::hold_vcpu(uint32_t index, bool hold) {
  if (index < threads_.size())
    threads_[index]->hold(hold);
}

void kvm_guest::do_pause() {
  for (auto& t : threads_)
    t->pause();
}

void kvm_guest::do_resume() {
  for (auto& t : threads_)
    t->resume();
}

run_state kvm_guest::execution_state() const {
  std::lock_guard lk{stop_mtx_};
  return stopped_;
}

std::string kvm_guest::stop_reason() const {
  std::lock_guard lk{stop_mtx_};
  return stop_reason_;
}

dirty_tracker& kvm_guest::kvm_dirty_tracker() {
  if (ring_)
    return *ring_;
  return *bitmap_;
}

vcpu& kvm_guest::cpu(size_t i) {
  return *cpus_.at(i);
}

size_t kvm_guest::cpu_count() const {
  return cpus_.size();
}

caf::expected<std::vector<uint8_t>> kvm_guest::save_cpu_state() {
  if (state() == run_state::running)
    return make_ferry_error(errc::bad_run_state,
                            "vCPU state can only be saved while the guest is paused");
  std::vector<uint8_t> out;
  append_bytes(out, cpus_magic);
  append_bytes(out, cpus_version);
  append_bytes(out, static_cast<uint16_t>(cpus_.size()));
  for (size_t i = 0; i < cpus_.size(); ++i) {
    auto st = cpus_[i]->save();
    if (!st)
      return st.error();
    const auto blob = st->serialize();
    append_bytes(out, static_cast<uint8_t>(threads_[i]->current()));
    append_bytes(out, uint8_t{0});
    append_bytes(out, uint16_t{0});
    append_bytes(out, static_cast<uint32_t>(blob.size()));
    out.insert(out.end(), blob.begin(), blob.end());
  }
  return out;
}

caf::expected<void> kvm_guest::load_cpu_state(std::span<const uint8_t> blob) {
  auto bad = [](const std::string& what) {
    return make_ferry_error(errc::bad_state_blob, "guest CPU state: " + what);
  };
  if (state() == run_state::running)
    return make_ferry_error(errc::bad_run_state,
                            "vCPU state can only be loaded while the guest is paused");
  if (blob.size() < 8 || load_bytes<uint32_t>(blob.data()) != cpus_magic)
    return bad("bad magic");
  if (load_bytes<uint16_t>(blob.data() + 4) != cpus_version)
    return bad("unsupported version");
  const auto count = load_bytes<uint16_t>(blob.data() + 6);
  if (count != cpus_.size())
    return bad("holds " + std::to_string(count) + " vCPUs, this guest has " +
               std::to_string(cpus_.size()));
  // Parse everything before touching any vCPU: a bad blob changes nothing.
  std::vector<std::pair<uint8_t, vcpu_state>> parsed;
  size_t at = 8;
  for (uint16_t i = 0; i < count; ++i) {
    if (blob.size() - at < 8)
      return bad("truncated");
    const uint8_t activity = blob[at];
    const auto len = load_bytes<uint32_t>(blob.data() + at + 4);
    at += 8;
    if (activity > activity_max)
      return bad("unknown vCPU activity " + std::to_string(activity));
    if (len > blob.size() - at)
      return bad("vCPU blob runs past the end");
    auto st = vcpu_state::deserialize(blob.subspan(at, len));
    if (!st)
      return st.error();
    parsed.emplace_back(activity, std::move(*st));
    at += len;
  }
  if (at != blob.size())
    return bad("trailing bytes");
  for (size_t i = 0; i < cpus_.size(); ++i) {
    if (auto ok = cpus_[i]->restore(parsed[i].second); !ok)
      return ok;
    threads_[i]->set_activity(static_cast<vcpu_thread::activity>(parsed[i].first));
  }
  std::lock_guard lk{stop_mtx_};
  stopped_ = run_state::running;
  stop_reason_.clear();
  return {};
}

std::vector<int> kvm_guest::vcpu_thread_ids() const {
  std::vector<int> ids;
  for (const auto& t : threads_)
    ids.push_back(t->thread_id());
  return ids;
}

} // namespace ferry
