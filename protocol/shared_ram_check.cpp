#include "protocol/shared_ram_check.hpp"

#include "protocol/protocol_error.hpp"
#include "protocol/wire_bytes.hpp"

#include <algorithm>
#include <string>

namespace ferry::mig {

namespace {

constexpr size_t prefix_size = 8;
constexpr size_t sample_size = 16;

caf::error bad(std::string what) {
  return make_protocol_error(protocol_errc::malformed, "shared-ram record: " + std::move(what));
}

} // namespace

std::vector<uint64_t> shared_sample_pages(uint64_t ram_pages) {
  std::vector<uint64_t> out;
  if (ram_pages == 0)
    return out;
  const uint64_t n = std::min<uint64_t>(ram_pages, max_shared_samples);
  out.reserve(n);
  if (n == 1) {
    out.push_back(0);
    return out;
  }
  // i * (pages - 1) / (n - 1) without overflow: quotient and remainder
  // apart. Exact, strictly increasing while n <= pages, first 0, last
  // pages - 1.
  const uint64_t q = (ram_pages - 1) / (n - 1);
  const uint64_t r = (ram_pages - 1) % (n - 1);
  for (uint64_t i = 0; i < n; ++i)
    out.push_back(i * q + i * r / (n - 1));
  return out;
}

std::vector<uint8_t> encode_shared_ram(std::span<const shared_page_sample> samples) {
  std::vector<uint8_t> out;
  out.reserve(prefix_size + samples.size() * sample_size);
  wire::put(out, static_cast<uint32_t>(samples.size()));
  wire::put(out, uint32_t{0});
  for (const auto& s : samples) {
    wire::put(out, s.pfn);
    wire::put(out, s.hash);
  }
  return out;
}

caf::expected<std::vector<shared_page_sample>> decode_shared_ram(std::span<const uint8_t> p,
                                                                 uint64_t ram_pages) {
  if (p.size() < prefix_size)
    return bad(std::to_string(p.size()) + " bytes");
  const auto count = wire::get<uint32_t>(p.data());
  if (count == 0 || count > max_shared_samples)
    return bad("sample count " + std::to_string(count) + " outside 1.." +
               std::to_string(max_shared_samples));
  if (wire::get<uint32_t>(p.data() + 4) != 0)
    return bad("reserved field set");
  if (p.size() != prefix_size + size_t{count} * sample_size)
    return bad(std::to_string(p.size()) + " bytes for " + std::to_string(count) + " samples");
  std::vector<shared_page_sample> out(count);
  for (uint32_t i = 0; i < count; ++i) {
    const uint8_t* at = p.data() + prefix_size + size_t{i} * sample_size;
    out[i] = {wire::get<uint64_t>(at), wire::get<uint64_t>(at + 8)};
    if (out[i].pfn >= ram_pages)
      return bad("page " + std::to_string(out[i].pfn) + " outside RAM of " +
                 std::to_string(ram_pages) + " pages");
    if (i > 0 && out[i].pfn <= out[i - 1].pfn)
      return bad("page " + std::to_string(out[i].pfn) + " out of order");
  }
  return out;
}

} // namespace ferry::mig
