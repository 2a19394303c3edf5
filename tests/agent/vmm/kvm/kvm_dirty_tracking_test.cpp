// The KVM dirty trackers against an oracle: a probe guest writes exactly the
// pages the test lists, and each tracker must report exactly those pages —
// none missed, none extra — and pages written after a sync in the next sync.

#include "agent/vmm/kvm/kvm_dirty_bitmap.hpp"
#include "agent/vmm/kvm/kvm_dirty_ring.hpp"
#include "agent/vmm/kvm/kvm_guest.hpp"
#include "agent/vmm/kvm/vcpu.hpp"
#include "common/error.hpp"
#include "tests/support/kvm_skip.hpp"

#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <set>

extern "C" const uint8_t ferry_page_writer_guest_start[];
extern "C" const uint8_t ferry_page_writer_guest_end[];

using namespace ferry;

namespace {

constexpr uint64_t ram_bytes = 2u << 20;
constexpr uint64_t list_addr = 0x7e00;
constexpr uint64_t code_page = 7; // 0x7000: code at 0x7c00, list at 0x7e00

std::vector<uint8_t> probe_code() {
  return {ferry_page_writer_guest_start, ferry_page_writer_guest_end};
}

// Pages below 1 MiB the probe may write: all but the code/list page, and
// page 0, whose segment (0) would end the list.
std::vector<uint64_t> random_pages(std::mt19937_64& rng, size_t n) {
  std::set<uint64_t> s;
  while (s.size() < n) {
    const uint64_t p = rng() % 256;
    if (p != code_page && p != 0)
      s.insert(p);
  }
  return {s.begin(), s.end()};
}

struct probe_vm {
  explicit probe_vm(guest_memory m) : mem(std::move(m)) {}
  guest_memory mem;
  std::unique_ptr<kvm_vm> vm;
  platform_io io{nullptr};
  std::unique_ptr<kvm_dirty_bitmap> bitmap;
  std::unique_ptr<kvm_dirty_ring> ring;
  std::unique_ptr<vcpu> cpu;

  dirty_tracker& tracker() { return ring ? static_cast<dirty_tracker&>(*ring) : *bitmap; }

  // Runs the probe over `pages` until it halts.
  void write_pages(const std::vector<uint64_t>& pages) {
    auto list = mem.range(list_addr, (pages.size() + 1) * 2);
    ASSERT_FALSE(list.empty());
    for (size_t i = 0; i < pages.size(); ++i) {
      const uint16_t seg = static_cast<uint16_t>(pages[i] * 0x100);
      std::memcpy(list.data() + i * 2, &seg, 2);
    }
    std::memset(list.data() + pages.size() * 2, 0, 2);
    ASSERT_TRUE(cpu->reset_real_mode(0x7c00));
    for (int i = 0; i < 100000; ++i) {
      const auto ex = cpu->run_once();
      if (ex == vcpu_exit::halted)
        return;
      ASSERT_TRUE(ex == vcpu_exit::handled || ex == vcpu_exit::interrupted) << cpu->last_error();
    }
    FAIL() << "probe guest did not halt";
  }
};

std::unique_ptr<probe_vm> make_probe(kvm_vm_options opts) {
  auto mem = guest_memory::create({memory_backend::kind::ram, ram_bytes, {}, false});
  EXPECT_TRUE(mem);
  auto p = std::make_unique<probe_vm>(std::move(*mem));
  auto vm = kvm_vm::create(p->mem, opts);
  EXPECT_TRUE(vm) << describe(vm.error());
  if (!vm)
    return nullptr;
  p->vm = std::move(*vm);
  if (opts.dirty_log == dirty_log_kind::ring)
    p->ring = std::make_unique<kvm_dirty_ring>(*p->vm);
  else
    p->bitmap = std::make_unique<kvm_dirty_bitmap>(*p->vm);
  auto cpu = vcpu::create(*p->vm, 0, p->io, p->ring.get());
  EXPECT_TRUE(cpu) << describe(cpu.error());
  p->cpu = std::move(*cpu);
  const auto code = probe_code();
  std::memcpy(p->mem.data() + 0x7c00, code.data(), code.size());
  return p;
}

std::vector<uint64_t> sync_pages(dirty_tracker& t, uint64_t pages) {
  dirty_bitmap out{pages};
  EXPECT_TRUE(t.sync(out));
  return out.set_pages();
}

class kvm_tracker : public ::testing::TestWithParam<dirty_log_kind> {
protected:
  std::unique_ptr<probe_vm> make_param_probe() {
    kvm_vm_options opts;
    opts.dirty_log = GetParam();
    return make_probe(opts);
  }
};

} // namespace

TEST_P(kvm_tracker, reports_exactly_the_written_pages_sync_after_sync) {
  FERRY_REQUIRE_KVM();
  auto p = make_param_probe();
  ASSERT_TRUE(p);
  const uint64_t pages = p->mem.pages();
  ASSERT_TRUE(p->tracker().start());
  const auto first = sync_pages(p->tracker(), pages);
  if (GetParam() == dirty_log_kind::bitmap)
    EXPECT_EQ(first.size(), pages) << "KVM_DIRTY_LOG_INITIALLY_SET reports all RAM first";
  else
    EXPECT_TRUE(first.empty()) << "the ring starts empty";

  std::mt19937_64 rng{2024};
  for (int round = 0; round < 5; ++round) {
    const auto want = random_pages(rng, 10 + static_cast<size_t>(rng() % 60));
    p->write_pages(want);
    EXPECT_EQ(sync_pages(p->tracker(), pages), want) << "round " << round;
    EXPECT_TRUE(sync_pages(p->tracker(), pages).empty()) << "nothing written since";
  }
  p->tracker().stop();
}

TEST_P(kvm_tracker, host_writes_are_invisible_to_kvm) {
  FERRY_REQUIRE_KVM();
  auto p = make_param_probe();
  ASSERT_TRUE(p);
  ASSERT_TRUE(p->tracker().start());
  (void) sync_pages(p->tracker(), p->mem.pages());
  std::memset(p->mem.data() + 0x50000, 1, 4096);
  EXPECT_TRUE(sync_pages(p->tracker(), p->mem.pages()).empty())
    << "why the agent's own writes need the software log";
}

INSTANTIATE_TEST_SUITE_P(both, kvm_tracker,
                         ::testing::Values(dirty_log_kind::bitmap, dirty_log_kind::ring),
                         [](const ::testing::TestParamInfo<dirty_log_kind>& p) {
                           return p.param == dirty_log_kind::bitmap ? "bitmap" : "ring";
                         });

TEST(kvm_dirty_ring, a_full_ring_is_harvested_by_the_vcpu_without_loss) {
  FERRY_REQUIRE_KVM();
  kvm_vm_options opts;
  opts.dirty_log = dirty_log_kind::ring;
  opts.dirty_ring_entries = 256; // the smallest ring KVM accepts (one page)
  auto p = make_probe(opts);
  ASSERT_TRUE(p);
  ASSERT_TRUE(p->ring->start());
  std::vector<uint64_t> many;
  for (uint64_t pg = 8; pg < 256; ++pg)
    many.push_back(pg);
  p->write_pages(many); // 248 pages > the ring's soft limit: RING_FULL exits
  EXPECT_EQ(sync_pages(*p->ring, p->mem.pages()), many);
  EXPECT_EQ(p->ring->bad_entries(), 0U);
}

TEST(kvm_dirty_ring, a_ring_size_that_is_not_a_power_of_two_is_refused) {
  FERRY_REQUIRE_KVM();
  auto mem = guest_memory::create({memory_backend::kind::ram, ram_bytes, {}, false});
  ASSERT_TRUE(mem);
  kvm_vm_options opts;
  opts.dirty_log = dirty_log_kind::ring;
  opts.dirty_ring_entries = 1000;
  auto vm = kvm_vm::create(*mem, opts);
  ASSERT_FALSE(vm);
  EXPECT_EQ(vm.error(), errc::invalid_argument);
}

// The guest-level tracker is the union of KVM's log and the software log.
TEST(kvm_guest_dirty_log, union_of_guest_and_host_writes) {
  FERRY_REQUIRE_KVM();
  kvm_guest_config cfg;
  cfg.memory = {memory_backend::kind::ram, ram_bytes, {}, false};
  cfg.boot_sector = probe_code();
  auto g = kvm_guest::create(std::move(cfg));
  ASSERT_TRUE(g) << describe(g.error());
  auto& guest = **g;
  const uint16_t list[] = {0x2000, 0x3100, 0};
  std::memcpy(guest.memory().data() + list_addr, list, sizeof list);
  ASSERT_TRUE(guest.dirty_log().start());
  (void) sync_pages(guest.dirty_log(), guest.memory().pages()); // initially-set
  std::memset(guest.memory().data() + 0x90000, 7, 10);
  guest.host_writes().mark(0x90000, 10);
  ASSERT_TRUE(guest.start());
  // The probe halts after its two writes.
  for (int i = 0; i < 500 && guest.memory().data()[0x31000] == 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  auto pause = guest.pause();
  EXPECT_EQ(sync_pages(guest.dirty_log(), guest.memory().pages()),
            (std::vector<uint64_t>{0x20, 0x31, 0x90}));
}
