#include "agent/convergence/dirty_rate.hpp"

#include "agent/vmm/kvm/kvm_dirty_ring.hpp"
#include "common/error.hpp"
#include "protocol/crc32c.hpp"

#include <boost/json.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <random>

namespace ferry {

namespace json = boost::json;
using clock_type = std::chrono::steady_clock;

namespace {

constexpr uint64_t page_bytes = 4096;

uint64_t ms_between(clock_type::time_point a, clock_type::time_point b) {
  return static_cast<uint64_t>(
    std::chrono::duration_cast<std::chrono::milliseconds>(b - a).count());
}

// MiB/s of `pages` distinct pages over `ms`, to the nearest MiB/s.
uint64_t mib_per_s(double pages, uint64_t ms) {
  if (ms == 0)
    return 0;
  return static_cast<uint64_t>(std::llround(pages * static_cast<double>(page_bytes) / (1 << 20) *
                                            1000.0 / static_cast<double>(ms)));
}

} // namespace

const char* to_string(dirty_rate_mode m) {
  switch (m) {
    case dirty_rate_mode::page_sampling:
      return "page-sampling";
    case dirty_rate_mode::dirty_ring:
      return "dirty-ring";
    case dirty_rate_mode::dirty_bitmap:
      return "dirty-bitmap";
  }
  return "page-sampling";
}

dirty_rate_meter::dirty_rate_meter(guest& g) : g_(g) {}

dirty_rate_meter::~dirty_rate_meter() {
  worker_.stop();
}

std::optional<std::string> dirty_rate_meter::start(const dirty_rate_request& r) {
  std::unique_lock lk{mtx_};
  if (status_ == status::measuring)
    return std::string{"the dirty rate is already being measured."};
  // QEMU's rule: ring mode only with the dirty ring, bitmap mode only without.
  const bool ring = g_.dirty_ring() != nullptr;
  if ((r.mode == dirty_rate_mode::dirty_ring && !ring) ||
      (r.mode == dirty_rate_mode::dirty_bitmap && ring))
    return std::string{"mode "} + to_string(r.mode) + " is not enabled, use other method instead.";
  status_ = status::measuring;
  req_ = r;
  rate_.reset();
  vcpu_rates_.clear();
  error_.clear();
  start_time_ = std::chrono::duration_cast<std::chrono::seconds>(
                  std::chrono::system_clock::now().time_since_epoch())
                  .count();
  lk.unlock();
  // (The previous measurement's thread, already done, is joined first.)
  worker_.start("dirtyrate", [this, r] { run(r); });
  return std::nullopt;
}

bool dirty_rate_meter::measuring() const {
  std::lock_guard lk{mtx_};
  return status_ == status::measuring;
}

bool dirty_rate_meter::holds_dirty_log() const {
  std::lock_guard lk{mtx_};
  return status_ == status::measuring && req_.mode == dirty_rate_mode::dirty_bitmap;
}

json::object dirty_rate_meter::info(bool in_ms) const {
  std::lock_guard lk{mtx_};
  json::object o;
  if (status_ == status::measured && rate_)
    o["dirty-rate"] = static_cast<int64_t>(*rate_);
  o["status"] = status_ == status::unstarted   ? "unstarted"
                : status_ == status::measuring ? "measuring"
                                               : "measured";
  o["start-time"] = start_time_;
  o["calc-time"] = static_cast<int64_t>(in_ms ? req_.calc_time_ms : req_.calc_time_ms / 1000);
  o["calc-time-unit"] = in_ms ? "millisecond" : "second";
  o["sample-pages"] = status_ == status::unstarted ? 0 : req_.sample_pages;
  o["mode"] = to_string(req_.mode);
  if (status_ == status::measured && req_.mode == dirty_rate_mode::dirty_ring) {
    json::array per_vcpu;
    for (size_t i = 0; i < vcpu_rates_.size(); ++i)
      per_vcpu.push_back(json::object{{"id", static_cast<int64_t>(i)},
                                      {"dirty-rate", static_cast<int64_t>(vcpu_rates_[i])}});
    o["vcpu-dirty-rate"] = std::move(per_vcpu);
  }
  return o;
}

bool dirty_rate_meter::wait_period(uint64_t ms) {
  std::unique_lock lk{mtx_};
  return worker_.wait_for(lk, std::chrono::milliseconds(ms));
}

void dirty_rate_meter::run(dirty_rate_request r) {
  caf::expected<void> ok{};
  switch (r.mode) {
    case dirty_rate_mode::page_sampling:
      ok = sample_pages(r);
      break;
    case dirty_rate_mode::dirty_bitmap:
      ok = count_bitmap(r);
      break;
    case dirty_rate_mode::dirty_ring:
      ok = count_ring(r);
      break;
  }
  if (!ok) {
    std::lock_guard lk{mtx_};
    error_ = describe(ok.error());
    rate_ = 0;
    status_ = status::measured;
  }
}

void dirty_rate_meter::finish(uint64_t dirty_pages, uint64_t elapsed_ms,
                              const std::vector<uint64_t>& per_vcpu) {
  std::lock_guard lk{mtx_};
  rate_ = mib_per_s(static_cast<double>(dirty_pages), elapsed_ms);
  for (const uint64_t n : per_vcpu)
    vcpu_rates_.push_back(mib_per_s(static_cast<double>(n), elapsed_ms));
  status_ = status::measured;
}

caf::expected<void> dirty_rate_meter::sample_pages(const dirty_rate_request& r) {
  const auto mem = g_.memory().bytes();
  const uint64_t pages = mem.size() / page_bytes;
  // At least one sample however small the guest; never more than it has.
  const uint64_t want = std::clamp<uint64_t>(mem.size() * r.sample_pages >> 30, 1, pages);
  std::mt19937_64 rng{std::random_device{}()};
  std::vector<uint64_t> picked;
  picked.reserve(want);
  // Floyd's algorithm: `want` distinct pages, uniformly.
  std::vector<bool> taken(pages);
  for (uint64_t j = pages - want; j < pages; ++j) {
    const uint64_t t = std::uniform_int_distribution<uint64_t>{0, j}(rng);
    const uint64_t p = taken[t] ? j : t;
    taken[p] = true;
    picked.push_back(p);
  }
  auto hash = [&](uint64_t p) { return crc32c(0, mem.subspan(p * page_bytes, page_bytes)); };
  std::vector<uint32_t> before(want);
  const auto a0 = clock_type::now();
  for (uint64_t i = 0; i < want; ++i)
    before[i] = hash(picked[i]);
  const auto a1 = clock_type::now();
  if (!wait_period(r.calc_time_ms))
    return {};
  uint64_t changed = 0;
  const auto b0 = clock_type::now();
  for (uint64_t i = 0; i < want; ++i)
    changed += hash(picked[i]) != before[i] ? 1 : 0;
  const auto b1 = clock_type::now();
  // Each page was watched from its first hash to its second: on average
  // from the middle of the first pass to the middle of the second. (The
  // first pass can be much slower — it touches sparse RAM for the first
  // time — so timing from its start would undercount the rate.)
  const uint64_t elapsed = ms_between(a0 + (a1 - a0) / 2, b0 + (b1 - b0) / 2);
  // The sampled share of RAM that changed, scaled to all of it.
  finish(changed * pages / want, elapsed);
  return {};
}

caf::expected<void> dirty_rate_meter::count_bitmap(const dirty_rate_request& r) {
  dirty_tracker& log = g_.dirty_log();
  if (auto ok = log.start(); !ok)
    return ok;
  dirty_bitmap bits{g_.memory().pages()};
  // The first sync reports what came before (KVM reports every page then).
  auto ok = log.sync(bits);
  const auto t0 = clock_type::now();
  if (ok && wait_period(r.calc_time_ms)) {
    bits.clear();
    ok = log.sync(bits);
    if (ok)
      finish(bits.count(), ms_between(t0, clock_type::now()));
  }
  log.stop();
  return ok;
}

caf::expected<void> dirty_rate_meter::count_ring(const dirty_rate_request& r) {
  kvm_dirty_ring* ring = g_.dirty_ring();
  auto window = ring->window_open();
  if (!window)
    return window.error();
  const auto t0 = clock_type::now();
  caf::expected<void> ok{};
  if (wait_period(r.calc_time_ms)) {
    auto m = ring->window_read(*window);
    if (m)
      finish(m->total, ms_between(t0, clock_type::now()), m->per_vcpu);
    else
      ok = m.error();
  }
  ring->window_close(*window);
  return ok;
}

} // namespace ferry
