// What every migrated page costs in checks, per side: the zero test, the
// record CRC-32C and the switchover digest's hash. Opt-in (not in ctest):
//   build/bench/ferry-page-checks-bench
// Throughput is in bytes of guest RAM per second of one core.

#include "protocol/crc32c.hpp"
#include "protocol/migration_stream.hpp"
#include "protocol/page_digest.hpp"

#include <benchmark/benchmark.h>

#include <random>
#include <vector>

namespace {

constexpr size_t page = 4096;
constexpr size_t pages = 256; // 1 MiB: stays in L2, so the figures are compute

std::vector<uint8_t> random_ram() {
  std::vector<uint8_t> ram(page * pages);
  std::mt19937_64 rng{1};
  for (auto& b : ram)
    b = static_cast<uint8_t>(rng());
  return ram;
}

void per_page(benchmark::State& state, uint64_t (*check)(const uint8_t*)) {
  const auto ram = random_ram();
  uint64_t sink = 0;
  for (auto _ : state) {
    (void) _;
    for (size_t i = 0; i < pages; ++i)
      sink ^= check(ram.data() + i * page);
  }
  benchmark::DoNotOptimize(sink);
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * ram.size()));
}

void crc32c_per_page(benchmark::State& state) {
  per_page(state, [](const uint8_t* p) -> uint64_t { return ferry::crc32c(0, {p, page}); });
}
void page_hash(benchmark::State& state) {
  per_page(state, [](const uint8_t* p) { return ferry::mig::page_hash(p); });
}
void zero_test(benchmark::State& state) {
  // A non-zero byte at the end: the test reads the whole page.
  std::vector<uint8_t> ram(page * pages);
  for (size_t i = 0; i < pages; ++i)
    ram[i * page + page - 1] = 1;
  uint64_t sink = 0;
  for (auto _ : state) {
    (void) _;
    for (size_t i = 0; i < pages; ++i)
      sink += ferry::mig::is_zero_page(ram.data() + i * page) ? 1 : 0;
  }
  benchmark::DoNotOptimize(sink);
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * ram.size()));
}
void crc32c_per_span(benchmark::State& state) {
  // A record of 16 KiB spans, as the channels write them.
  const auto ram = random_ram();
  uint32_t sink = 0;
  for (auto _ : state) {
    (void) _;
    for (size_t at = 0; at < ram.size(); at += 4 * page)
      sink ^= ferry::crc32c(sink, {ram.data() + at, 4 * page});
  }
  benchmark::DoNotOptimize(sink);
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * ram.size()));
}

} // namespace

BENCHMARK(zero_test);
BENCHMARK(crc32c_per_page);
BENCHMARK(crc32c_per_span);
BENCHMARK(page_hash);
BENCHMARK_MAIN();
