#include "tools/testguest/verifier.hpp"

#include "agent/hex.hpp"

#include "tools/testguest/pattern.hpp"

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
  for (const auto& p : problems)
    os << "\n  " << p;
  return os.str();
}

verify_report verify(std::span<const uint8_t> mem, std::optional<guest_params> given) {
  verify_report r;
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

  const uint64_t ws_begin = p.ws_start;
  const uint64_t ws_end = ws_begin + uint64_t{p.ws_pages} * page_bytes;
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

  if (p.ws_pages > 0) {
    uint32_t prev = counter_at(mem, ws_begin);
    r.counter_min = r.counter_max = prev;
    for (uint64_t addr = ws_begin + page_bytes; addr < ws_end; addr += page_bytes) {
      const uint32_t c = counter_at(mem, addr);
      r.counter_min = std::min(r.counter_min, c);
      r.counter_max = std::max(r.counter_max, c);
      if (c == prev - 1) {
        ++r.step_downs;
      } else if (c != prev) {
        problem("counter at " + to_hex(addr) + " is " + std::to_string(c) + " after " +
                std::to_string(prev));
        r.step_downs += 2; // out of step: can never be consistent
      }
      prev = c;
    }
    if (r.step_downs > 1)
      problem(std::to_string(r.step_downs) + " counter step downs (at most one allowed)");
  }
  r.consistent = r.bad_pages == 0 && r.step_downs <= 1;
  return r;
}

} // namespace ferry::testguest
