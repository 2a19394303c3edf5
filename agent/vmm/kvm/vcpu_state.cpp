#include "agent/vmm/kvm/vcpu_state.hpp"

#include "agent/vmm/blob_bytes.hpp"
#include "common/error.hpp"

#include <array>
#include <cstring>

namespace ferry {

namespace {

enum section : uint16_t {
  sec_regs = 1,
  sec_sregs = 2,
  sec_xsave = 3,
  sec_xcrs = 4,
  sec_msrs = 5,
  sec_events = 6,
  sec_debugregs = 7,
  sec_mp_state = 8,
  sec_last = sec_mp_state,
};

constexpr size_t header_size = 8;
constexpr size_t section_header_size = 8;
constexpr size_t max_xsave_bytes = 1 << 20;
constexpr uint32_t max_msrs = 4096;

struct writer {
  std::vector<uint8_t> out;
  template <class T>
  void put(const T& v) {
    append_bytes(out, v);
  }
  void bytes(const void* p, size_t n) {
    const auto* b = static_cast<const uint8_t*>(p);
    out.insert(out.end(), b, b + n);
  }
  void section(uint16_t id, const void* p, size_t n) {
    put(id);
    put(uint16_t{0});
    put(static_cast<uint32_t>(n));
    bytes(p, n);
  }
};

caf::error bad(const std::string& what) {
  return make_ferry_error(errc::bad_state_blob, "vCPU state: " + what);
}

template <class T>
caf::expected<void> fixed(std::span<const uint8_t> payload, T& dst, const char* name) {
  if (payload.size() != sizeof(T))
    return bad(std::string{name} + " section has " + std::to_string(payload.size()) +
               " bytes, expected " + std::to_string(sizeof(T)));
  std::memcpy(&dst, payload.data(), sizeof(T));
  return {};
}

} // namespace

std::vector<uint8_t> vcpu_state::serialize() const {
  writer w;
  w.put(magic);
  w.put(version);
  w.put(uint16_t{sec_last});
  w.section(sec_regs, &regs, sizeof regs);
  w.section(sec_sregs, &sregs, sizeof sregs);
  w.section(sec_xsave, xsave.data(), xsave.size());
  w.section(sec_xcrs, &xcrs, sizeof xcrs);
  const uint32_t n = static_cast<uint32_t>(msrs.size());
  w.put(uint16_t{sec_msrs});
  w.put(uint16_t{0});
  w.put(static_cast<uint32_t>(4 + n * 16));
  w.put(n);
  for (const auto& m : msrs) {
    w.put(m.index);
    w.put(uint32_t{0});
    w.put(static_cast<uint64_t>(m.data));
  }
  w.section(sec_events, &events, sizeof events);
  w.section(sec_debugregs, &debugregs, sizeof debugregs);
  w.section(sec_mp_state, &mp_state, sizeof mp_state);
  return std::move(w.out);
}

caf::expected<vcpu_state> vcpu_state::deserialize(std::span<const uint8_t> blob) {
  if (blob.size() < header_size)
    return bad("blob of " + std::to_string(blob.size()) + " bytes is truncated");
  if (load_bytes<uint32_t>(blob.data()) != magic)
    return bad("bad magic");
  const auto ver = load_bytes<uint16_t>(blob.data() + 4);
  if (ver != version)
    return bad("unsupported version " + std::to_string(ver));
  const auto count = load_bytes<uint16_t>(blob.data() + 6);
  if (count != sec_last)
    return bad("expected " + std::to_string(sec_last) + " sections, found " +
               std::to_string(count));

  vcpu_state st;
  std::array<bool, sec_last + 1> seen{};
  size_t at = header_size;
  for (uint16_t i = 0; i < count; ++i) {
    if (blob.size() - at < section_header_size)
      return bad("section header truncated");
    const auto id = load_bytes<uint16_t>(blob.data() + at);
    const auto reserved = load_bytes<uint16_t>(blob.data() + at + 2);
    const auto len = load_bytes<uint32_t>(blob.data() + at + 4);
    at += section_header_size;
    if (len > blob.size() - at)
      return bad("section " + std::to_string(id) + " length " + std::to_string(len) +
                 " runs past the end of the blob");
    if (id == 0 || id > sec_last)
      return bad("unknown section " + std::to_string(id));
    if (seen[id])
      return bad("duplicate section " + std::to_string(id));
    seen[id] = true;
    // One canonical encoding: sections in id order, reserved bits zero. A
    // blob that parses is exactly what serialize() would have written.
    if (id != i + 1)
      return bad("section " + std::to_string(id) + " out of order");
    if (reserved != 0)
      return bad("reserved bits set in section " + std::to_string(id));
    const std::span<const uint8_t> payload = blob.subspan(at, len);
    at += len;
    caf::expected<void> ok{};
    switch (id) {
      case sec_regs:
        ok = fixed(payload, st.regs, "regs");
        break;
      case sec_sregs:
        ok = fixed(payload, st.sregs, "sregs");
        break;
      case sec_xsave:
        if (payload.size() < sizeof(kvm_xsave) || payload.size() > max_xsave_bytes ||
            payload.size() % 64 != 0)
          return bad("xsave section of " + std::to_string(payload.size()) +
                     " bytes is out of range");
        st.xsave.assign(payload.begin(), payload.end());
        break;
      case sec_xcrs:
        ok = fixed(payload, st.xcrs, "xcrs");
        if (ok && st.xcrs.nr_xcrs > KVM_MAX_XCRS)
          return bad("too many XCRs");
        break;
      case sec_msrs: {
        if (payload.size() < 4)
          return bad("msrs section truncated");
        const auto n = load_bytes<uint32_t>(payload.data());
        if (n > max_msrs || payload.size() != 4 + size_t{n} * 16)
          return bad("msrs section length does not match its count " + std::to_string(n));
        st.msrs.resize(n);
        for (uint32_t k = 0; k < n; ++k) {
          const uint8_t* entry = payload.data() + 4 + size_t{k} * 16;
          if (load_bytes<uint32_t>(entry + 4) != 0)
            return bad("reserved bits set in MSR entry " + std::to_string(k));
          st.msrs[k].index = load_bytes<uint32_t>(entry);
          st.msrs[k].data = load_bytes<uint64_t>(entry + 8);
        }
        break;
      }
      case sec_events:
        ok = fixed(payload, st.events, "events");
        break;
      case sec_debugregs:
        ok = fixed(payload, st.debugregs, "debugregs");
        break;
      case sec_mp_state:
        ok = fixed(payload, st.mp_state, "mp_state");
        break;
      default:
        break;
    }
    if (!ok)
      return ok.error();
  }
  if (at != blob.size())
    return bad(std::to_string(blob.size() - at) + " trailing bytes");
  return st;
}

} // namespace ferry
