#include "tools/testguest/verifier.hpp"

#include "common/hex.hpp"

#include "agent/testguest/pattern.hpp"

#include <algorithm>
#include <cstring>
#include <sstream>

namespace ferry::testguest {

namespace {

constexpr size_t max_problems = 8;

uint32_t counter_at(std::span<const uint8_t> mem, uint64_t addr) {
  uint32_t c;
  std::memcpy(&c, mem.data() + addr, 4);
  return c;
}

} // namespace

std::string verify_report::summary() const {
  std::ostringstream os;
  os << (consistent ? "consistent" : "INCONSISTENT") << ": " << pattern_pages << " pattern pages ("
     << bad_pages << " bad), working set " << params.ws_pages << " pages at "
     << to_hex(params.ws_start) << ", counters " << counter_min << ".." << counter_max << " with "
     << step_downs << " step down(s)";
  if (vcpus > 1)
    os << ", " << vcpus << " vCPU working sets";
  for (const auto& p : problems)
    os << "\n  " << p;
  return os.str();
}

verify_report verify(std::span<const uint8_t> mem, std::optional<guest_params> given,
                     uint32_t vcpus) {
  verify_report r;
  r.vcpus = std::max<uint32_t>(vcpus, 1);
  auto problem = [&](std::string s) {
    if (r.problems.size() < max_problems)
      r.problems.push_back(std::move(s));
  };
  if (given) {
    r.params = *given;
  } else {
    if (mem.size() < boot_address + sector_bytes) {
      problem("memory of " + std::to_string(mem.size()) +
              " bytes does not reach the boot sector at 0x7c00");
      return r;
    }
    auto p = read_params(mem.subspan(boot_address, sector_bytes));
    if (!p) {
      problem("no test guest parameter block at 0x7c00 + " + to_hex(param_offset));
      return r;
    }
    r.params = *p;
  }
  const guest_params& p = r.params;
  if (auto ok = p.validate(); !ok) {
    problem("parameter block is not valid");
    return r;
  }
  if (mem.size() < p.ram_top) {
    problem("memory of " + std::to_string(mem.size()) + " bytes is shorter than ram-top " +
            to_hex(p.ram_top));
    return r;
  }

  const uint64_t ws_bytes = uint64_t{p.ws_pages} * page_bytes;
  const uint64_t ws_begin = p.ws_start;
  // Every vCPU's working set together, cut at RAM's end.
  const uint64_t ws_end = std::min<uint64_t>(ws_begin + ws_bytes * r.vcpus, p.ram_top);
  for (uint64_t addr = p.pattern_start; addr < p.ram_top; addr += page_bytes) {
    const uint64_t page = addr / page_bytes;
    ++r.pattern_pages;
    const bool in_ws = addr >= ws_begin && addr < ws_end;
    const bool words_ok = page_matches(mem.data() + addr, page, p.seed);
    const bool counter_ok = in_ws || counter_at(mem, addr) == 0;
    if (!words_ok || !counter_ok) {
      ++r.bad_pages;
      problem("page " + to_hex(addr) +
              (words_ok
                 ? ": counter outside the working set is " + std::to_string(counter_at(mem, addr))
                 : ": pattern damaged"));
    }
  }

  // Each working set holds one wave front: at most one step down.
  bool waves_ok = true;
  for (uint32_t cpu = 0; cpu < r.vcpus && p.ws_pages > 0; ++cpu) {
    const uint64_t begin = ws_begin + ws_bytes * cpu;
    const uint64_t end = std::min(begin + ws_bytes, ws_end);
    if (begin >= end)
      break;
    uint32_t prev = counter_at(mem, begin);
    uint32_t lo = prev;
    uint32_t hi = prev;
    uint64_t downs = 0;
    for (uint64_t addr = begin + page_bytes; addr < end; addr += page_bytes) {
      const uint32_t c = counter_at(mem, addr);
      lo = std::min(lo, c);
      hi = std::max(hi, c);
      if (c == prev - 1) {
        ++downs;
      } else if (c != prev) {
        problem("counter at " + to_hex(addr) + " is " + std::to_string(c) + " after " +
                std::to_string(prev));
        downs += 2; // out of step: can never be consistent
      }
      prev = c;
    }
    if (downs > 1) {
      problem(std::to_string(downs) + " counter step downs in vCPU " + std::to_string(cpu) +
              "'s working set (at most one allowed)");
      waves_ok = false;
    }
    if (cpu == 0) {
      r.counter_min = lo;
      r.counter_max = hi;
      r.step_downs = downs;
    }
  }
  r.consistent = r.bad_pages == 0 && waves_ok;
  return r;
}

} // namespace ferry::testguest
