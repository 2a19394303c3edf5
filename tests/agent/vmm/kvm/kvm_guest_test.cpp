// Real KVM guests: the counter test guest boots from its boot sector, fills or
// recognises its pattern, stops and continues, and its vCPU state moves into a
// fresh VM where it continues exactly where it stopped.

#include "agent/testguest/guest_image.hpp"
#include "agent/vmm/kvm/kvm_dirty_ring.hpp"
#include "agent/vmm/kvm/kvm_guest.hpp"
#include "agent/vmm/kvm/vcpu.hpp"
#include "common/error.hpp"
#include "tests/support/kvm_skip.hpp"
#include "tests/support/temp_dir.hpp"
#include "tools/testguest/pattern_file.hpp"
#include "tools/testguest/verifier.hpp"

#include <gtest/gtest.h>

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <thread>

using namespace ferry;
using namespace std::chrono_literals;
namespace tg = ferry::testguest;

namespace {

std::string slurp(const std::string& path) {
  std::ifstream in{path, std::ios::binary};
  return {std::istreambuf_iterator<char>(in), {}};
}

uint32_t guest_passes(guest& g) {
  uint32_t v;
  std::memcpy(&v, g.memory().data() + tg::status_address, 4);
  return v;
}

std::vector<uint8_t> image_with(const tg::guest_params& p) {
  auto img = tg::builtin_image();
  std::vector<uint8_t> sector(img.begin(), img.end());
  EXPECT_TRUE(tg::write_params(sector, p));
  return sector;
}

struct counter_guest {
  tg::guest_params params;
  ferry::test::temp_dir tmp;
  std::string dir = tmp.path() + "/";
  std::string serial_path;
  std::unique_ptr<kvm_guest> g;

  // RAM pre-filled from a pattern file (the fast path) unless `prefill` is off.
  void create(bool prefill, uint64_t ram, const std::string& tag, kvm_vm_options opts = {}) {
    serial_path = dir + "ferry-serial-" + tag + ".txt";
    kvm_guest_config cfg;
    cfg.boot_sector = image_with(params);
    cfg.memory = {memory_backend::kind::ram, ram, {}, false};
    if (prefill) {
      const std::string ram_file = dir + "ferry-ram-" + tag + ".bin";
      ASSERT_TRUE(tg::write_pattern_file(ram_file, ram, params, cfg.boot_sector));
      cfg.memory = {memory_backend::kind::file, ram, ram_file, false};
    }
    cfg.serial = std::fopen(serial_path.c_str(), "w");
    cfg.kvm = opts;
    auto made = kvm_guest::create(std::move(cfg));
    ASSERT_TRUE(made) << describe(made.error());
    g = std::move(*made);
  }

  bool wait_serial(const std::string& needle, std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      if (slurp(serial_path).find(needle) != std::string::npos)
        return true;
      std::this_thread::sleep_for(10ms);
    }
    return false;
  }

  // A 16 MiB pre-filled guest rewriting `ws_pages` pages from 4 MiB on,
  // running `passes` passes, then its dirty log started and drained.
  void run_tracked(uint32_t ws_pages, kvm_vm_options opts, const std::string& tag,
                   uint32_t passes) {
    params.ram_top = 16u << 20;
    params.ws_start = 4u << 20;
    params.ws_pages = ws_pages;
    params.report_every = 0;
    create(true, 16u << 20, tag, opts);
    ASSERT_TRUE(g->start());
    ASSERT_TRUE(wait_passes(passes, std::chrono::seconds(20)));
    ASSERT_TRUE(g->dirty_log().start());
    dirty_bitmap drain{g->memory().pages()};
    ASSERT_TRUE(g->dirty_log().sync(drain));
  }

  bool wait_passes(uint32_t n, std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (guest_passes(*g) < n) {
      if (std::chrono::steady_clock::now() > deadline)
        return false;
      std::this_thread::sleep_for(5ms);
    }
    return true;
  }
};

} // namespace

TEST(kvm_guest, boots_the_prefilled_counter_guest_and_stays_consistent) {
  FERRY_REQUIRE_KVM();
  counter_guest c;
  c.params.ram_top = 32u << 20;
  c.params.ws_pages = 256;
  c.params.report_every = 10;
  c.create(true, 32u << 20, "boot");
  EXPECT_EQ(c.g->state(), run_state::prelaunch);
  ASSERT_TRUE(c.g->start());
  EXPECT_EQ(c.g->state(), run_state::running);
  ASSERT_TRUE(c.wait_serial("pass 0000000a", 20s)) << slurp(c.serial_path);
  EXPECT_EQ(slurp(c.serial_path).find("fill"), std::string::npos)
    << "a pre-filled pattern is recognised, not rewritten";
  auto pause = c.g->pause();
  EXPECT_EQ(c.g->state(), run_state::paused);
  auto r = tg::verify(c.g->memory().bytes());
  EXPECT_TRUE(r.consistent) << r.summary();
  EXPECT_GE(r.counter_min, 10U);
  // 32-bit protected mode, entered from the real-mode boot sector.
  auto regs = c.g->cpu(0).regs();
  ASSERT_TRUE(regs);
  EXPECT_GT(regs->rip, 0x7c00U);
  EXPECT_LT(regs->rip, 0x7e00U);
  EXPECT_EQ(c.g->io().unknown_port_io(), 0U);
  EXPECT_EQ(c.g->io().port92() & 2, 2) << "the guest enabled A20 through port 0x92";
}

TEST(kvm_guest, fills_its_own_ram_when_the_pattern_is_absent) {
  FERRY_REQUIRE_KVM();
  counter_guest c;
  c.params.ram_top = 2u << 20; // 256 pages: guest code is slow here
  c.params.ws_pages = 32;
  c.params.report_every = 1;
  c.create(false, 4u << 20, "fill");
  ASSERT_TRUE(c.g->start());
  ASSERT_TRUE(c.wait_serial("ready", 60s)) << slurp(c.serial_path);
  ASSERT_TRUE(c.wait_passes(2, 20s));
  EXPECT_NE(slurp(c.serial_path).find("fill"), std::string::npos);
  auto pause = c.g->pause();
  auto r = tg::verify(c.g->memory().bytes());
  EXPECT_TRUE(r.consistent) << r.summary();
}

TEST(kvm_guest, a_stopped_guest_is_out_of_kvm_run_and_continues_on_resume) {
  FERRY_REQUIRE_KVM();
  counter_guest c;
  c.params.ram_top = 8u << 20;
  c.params.report_every = 0;
  c.create(true, 8u << 20, "stop");
  ASSERT_TRUE(c.g->start());
  ASSERT_TRUE(c.wait_passes(5, 20s));
  {
    auto pause = c.g->pause();
    const std::vector<uint8_t> snap(c.g->memory().bytes().begin(), c.g->memory().bytes().end());
    std::this_thread::sleep_for(200ms);
    EXPECT_TRUE(std::equal(snap.begin(), snap.end(), c.g->memory().bytes().begin()))
      << "a paused guest must not write memory";
    {
      auto nested = c.g->pause(); // guards nest
    }
    EXPECT_EQ(c.g->state(), run_state::paused);
  }
  EXPECT_EQ(c.g->state(), run_state::running);
  const uint32_t at = guest_passes(*c.g);
  EXPECT_TRUE(c.wait_passes(at + 5, 20s)) << "the guest runs again after the last guard";
}

TEST(kvm_guest, unknown_port_io_and_mmio_are_ignored_and_counted) {
  FERRY_REQUIRE_KVM();
  // Real mode: out 0x80; in 0x81 -> [0x501]; write and read 0x100000 (past the
  // end of 1 MiB RAM: MMIO) -> [0x500]; hlt.
  const std::vector<uint8_t> code = {0xb0, 0x55, 0xe6, 0x80, 0xe4, 0x81, 0xa2, 0x01, 0x05, 0xb8,
                                     0xff, 0xff, 0x8e, 0xc0, 0x26, 0xc6, 0x06, 0x10, 0x00, 0x01,
                                     0x26, 0xa0, 0x20, 0x00, 0xa2, 0x00, 0x05, 0xf4};
  kvm_guest_config cfg;
  cfg.memory = {memory_backend::kind::ram, 1u << 20, {}, false};
  cfg.boot_sector = code;
  auto g = kvm_guest::create(std::move(cfg));
  ASSERT_TRUE(g) << describe(g.error());
  ASSERT_TRUE((*g)->start());
  for (int i = 0; i < 500 && (*g)->memory().data()[0x500] != 0xff; ++i)
    std::this_thread::sleep_for(10ms);
  auto pause = (*g)->pause();
  EXPECT_EQ((*g)->io().unknown_port_io(), 2U);
  EXPECT_EQ((*g)->io().unknown_mmio(), 2U);
  EXPECT_EQ((*g)->memory().data()[0x501], 0xff) << "unknown ports read as all ones";
  EXPECT_EQ((*g)->memory().data()[0x500], 0xff) << "unbacked memory reads as all ones";
  EXPECT_EQ((*g)->state(), run_state::paused) << "a halted guest still counts as running";
}

TEST(kvm_guest, cpu_state_moves_to_a_fresh_vm_and_continues_exactly) {
  FERRY_REQUIRE_KVM();
  counter_guest src;
  src.params.ram_top = 8u << 20;
  src.params.ws_pages = 64;
  src.params.report_every = 50;
  src.create(true, 8u << 20, "src");
  ASSERT_TRUE(src.g->start());
  ASSERT_TRUE(src.wait_passes(120, 30s));
  auto pause = src.g->pause();

  auto blob = src.g->save_cpu_state();
  ASSERT_TRUE(blob) << describe(blob.error());
  const uint32_t passes_at_snapshot = guest_passes(*src.g);
  const std::string dump = src.dir + "ferry-dump-src.bin";
  {
    std::ofstream out{dump, std::ios::binary};
    out.write(reinterpret_cast<const char*>(src.g->memory().data()),
              static_cast<std::streamsize>(src.g->memory().size()));
  }

  // The destination boots nothing: its RAM is the dump, its CPU the blob.
  counter_guest dst;
  dst.params = src.params;
  dst.serial_path = dst.dir + "ferry-serial-dst.txt";
  kvm_guest_config cfg;
  cfg.memory = {memory_backend::kind::file, 8u << 20, dump, false};
  cfg.serial = std::fopen(dst.serial_path.c_str(), "w");
  auto made = kvm_guest::create(std::move(cfg));
  ASSERT_TRUE(made) << describe(made.error());
  dst.g = std::move(*made);
  auto loaded = dst.g->load_cpu_state(*blob);
  ASSERT_TRUE(loaded) << describe(loaded.error());

  // Same registers, same everything: saving the restored VM gives the same
  // registers back (the TSC MSR moves on by itself, so compare regs/sregs).
  auto again = dst.g->save_cpu_state();
  ASSERT_TRUE(again);
  auto a = src.g->cpu(0).save();
  auto b = dst.g->cpu(0).save();
  ASSERT_TRUE(a && b);
  EXPECT_EQ(std::memcmp(&a->regs, &b->regs, sizeof a->regs), 0);
  EXPECT_EQ(a->sregs.cr0, b->sregs.cr0);
  EXPECT_EQ(a->sregs.cs.selector, b->sregs.cs.selector);
  EXPECT_EQ(a->xsave, b->xsave);

  ASSERT_TRUE(dst.g->start());
  ASSERT_TRUE(dst.wait_passes(passes_at_snapshot + 150, 30s));
  auto dpause = dst.g->pause();
  auto r = tg::verify(dst.g->memory().bytes());
  EXPECT_TRUE(r.consistent) << r.summary();
  EXPECT_GE(r.counter_min, passes_at_snapshot);
  const std::string serial = slurp(dst.serial_path);
  EXPECT_EQ(serial.find("ready"), std::string::npos) << "it continued, it did not reboot";
  EXPECT_NE(serial.find("pass "), std::string::npos) << serial;
  // The source, still paused, is untouched by all this.
  EXPECT_EQ(guest_passes(*src.g), passes_at_snapshot);
}

TEST(kvm_guest, bad_cpu_state_blobs_change_nothing) {
  FERRY_REQUIRE_KVM();
  counter_guest c;
  c.params.ram_top = 4u << 20;
  c.create(true, 4u << 20, "badblob");
  auto pause = c.g->pause();
  ASSERT_TRUE(c.g->start());
  auto blob = c.g->save_cpu_state();
  ASSERT_TRUE(blob);
  auto before = c.g->cpu(0).regs();
  for (size_t cut : {size_t{0}, size_t{7}, blob->size() / 2, blob->size() - 1}) {
    std::vector<uint8_t> bad(blob->begin(), blob->begin() + static_cast<long>(cut));
    auto ok = c.g->load_cpu_state(bad);
    ASSERT_FALSE(ok) << cut;
    EXPECT_EQ(ok.error(), errc::bad_state_blob);
  }
  auto after = c.g->cpu(0).regs();
  EXPECT_EQ(std::memcmp(&*before, &*after, sizeof(kvm_regs)), 0);
}

TEST(kvm_guest, running_counter_guest_dirties_exactly_its_working_set) {
  FERRY_REQUIRE_KVM();
  for (auto kind : {dirty_log_kind::bitmap, dirty_log_kind::ring}) {
    counter_guest c;
    kvm_vm_options opts;
    opts.dirty_log = kind;
    c.run_tracked(300, opts, kind == dirty_log_kind::ring ? "ring" : "bitmap", 3);
    ASSERT_TRUE(c.wait_passes(guest_passes(*c.g) + 3, 20s));
    auto pause = c.g->pause();
    dirty_bitmap dirty{c.g->memory().pages()};
    ASSERT_TRUE(c.g->dirty_log().sync(dirty));
    // The working set, plus the page holding the pass counter (0x6000).
    std::vector<uint64_t> want{tg::status_address / 4096};
    for (uint64_t p = 0; p < c.params.ws_pages; ++p)
      want.push_back(c.params.ws_start / 4096 + p);
    EXPECT_EQ(dirty.set_pages(), want) << (kind == dirty_log_kind::ring ? "ring" : "bitmap");
  }
}

// A hot vCPU with the smallest ring, held and released all the time as the
// dirty limit's brake does. Two ways this used to stop the vCPU for good:
// a kick landing while the vCPU thread resets its ring (KVM ends a reset
// early when a signal is pending, from Linux 6.17), and a host whose KVM
// writes past the ring's soft limit (nested ones here do), after which the
// repair moved KVM's reset position beyond its write position. The vCPU
// must keep running and no page it writes may go unreported.
TEST(kvm_guest, a_vcpu_held_and_released_while_its_ring_fills_keeps_running) {
  FERRY_REQUIRE_KVM();
  counter_guest c;
  kvm_vm_options opts;
  opts.dirty_log = dirty_log_kind::ring;
  opts.dirty_ring_entries = 256; // full every few hundred pages
  c.run_tracked(2048, opts, "hold", 2);
  const auto until = std::chrono::steady_clock::now() + 3s;
  uint64_t rounds = 0;
  while (std::chrono::steady_clock::now() < until) {
    c.g->hold_vcpu(0, true);
    std::this_thread::sleep_for(std::chrono::microseconds(50 + (rounds % 7) * 30));
    c.g->hold_vcpu(0, false);
    std::this_thread::sleep_for(std::chrono::microseconds(100 + (rounds % 5) * 40));
    ++rounds;
  }
  EXPECT_EQ(c.g->state(), run_state::running) << c.g->stop_reason();
  const uint32_t at = guest_passes(*c.g);
  EXPECT_TRUE(c.wait_passes(at + 2, 20s))
    << "the vCPU still runs after " << rounds << " holds: " << c.g->stop_reason();
  {
    auto pause = c.g->pause();
    dirty_bitmap dirty{c.g->memory().pages()};
    ASSERT_TRUE(c.g->dirty_log().sync(dirty));
    size_t missing = 0;
    for (uint64_t p = 0; p < c.params.ws_pages; ++p)
      missing += dirty.test(c.params.ws_start / 4096 + p) ? 0 : 1;
    EXPECT_EQ(missing, 0U) << "working-set pages written since the last sync but not reported";
  }
  std::printf("%llu holds, %llu ring overruns repaired\n", static_cast<unsigned long long>(rounds),
              static_cast<unsigned long long>(c.g->dirty_ring()->overruns()));
  c.g->dirty_log().stop();
}
