#include "agent/vmm/kvm/vcpu_state.hpp"
#include "common/error.hpp"

#include <gtest/gtest.h>

#include <cstring>

using namespace ferry;

namespace {

vcpu_state sample() {
  vcpu_state st;
  st.regs.rip = 0x7c00;
  st.regs.rax = 0x1122334455667788;
  st.regs.rflags = 0x202;
  st.sregs.cr0 = 0x11;
  st.sregs.cs.selector = 0x8;
  st.xsave.assign(4096, 0);
  for (size_t i = 0; i < st.xsave.size(); ++i)
    st.xsave[i] = static_cast<uint8_t>(i * 31);
  st.xcrs.nr_xcrs = 1;
  st.xcrs.xcrs[0].value = 7;
  st.msrs = {{0x10, 0, 123456}, {0xc0000080, 0, 0x500}};
  st.events.exception.injected = 1;
  st.debugregs.dr7 = 0x400;
  st.mp_state.mp_state = KVM_MP_STATE_RUNNABLE;
  return st;
}

// Byte offset of section `n` (1-based, in write order) in a serialized blob.
size_t section_offset(const std::vector<uint8_t>& blob, int n) {
  size_t at = 8;
  for (int i = 1; i < n; ++i) {
    uint32_t len;
    std::memcpy(&len, blob.data() + at + 4, 4);
    at += 8 + len;
  }
  return at;
}

std::string error_of(const std::vector<uint8_t>& blob) {
  auto st = vcpu_state::deserialize(blob);
  if (st)
    return "<parsed>";
  EXPECT_EQ(st.error(), errc::bad_state_blob);
  return describe(st.error());
}

} // namespace

TEST(vcpu_state, roundtrip_preserves_every_field) {
  const auto st = sample();
  const auto blob = st.serialize();
  auto back = vcpu_state::deserialize(blob);
  ASSERT_TRUE(back) << describe(back.error());
  EXPECT_EQ(back->serialize(), blob);
  EXPECT_EQ(back->regs.rax, st.regs.rax);
  EXPECT_EQ(back->msrs.size(), 2U);
  EXPECT_EQ(back->msrs[1].index, 0xc0000080U);
  EXPECT_EQ(back->msrs[1].data, 0x500U);
  EXPECT_EQ(back->xsave, st.xsave);
}

TEST(vcpu_state, every_truncation_is_refused_cleanly) {
  const auto blob = sample().serialize();
  for (size_t n = 0; n < blob.size(); ++n) {
    std::vector<uint8_t> cut(blob.begin(), blob.begin() + static_cast<long>(n));
    ASSERT_NE(error_of(cut), "<parsed>") << "prefix of " << n << " bytes";
  }
}

TEST(vcpu_state, corrupt_fields_are_named) {
  const auto good = sample().serialize();
  struct corruption {
    const char* what;
    std::function<void(std::vector<uint8_t>&)> apply;
    const char* fragment;
  };
  const std::vector<corruption> cases = {
    {"magic", [](auto& b) { b[0] ^= 1; }, "bad magic"},
    {"version", [](auto& b) { b[4] = 2; }, "unsupported version 2"},
    {"count", [](auto& b) { b[6] = 7; }, "expected 8 sections"},
    {"section id", [&](auto& b) { b[section_offset(good, 1)] = 42; }, "unknown section 42"},
    {"duplicate", [&](auto& b) { b[section_offset(good, 2)] = 1; }, "duplicate section 1"},
    {"regs length", [&](auto& b) { b[section_offset(good, 1) + 4] ^= 0x10; }, ""},
    {"xsave size",
     [&](auto& b) {
       // Shrink the xsave section to 100 bytes and drop the rest of its payload.
       const size_t at = section_offset(good, 3);
       uint32_t len = 100;
       std::memcpy(b.data() + at + 4, &len, 4);
       b.erase(b.begin() + static_cast<long>(at + 8 + 100),
               b.begin() + static_cast<long>(at + 8 + 4096));
     },
     "xsave section of 100 bytes"},
    {"msr count", [&](auto& b) { b[section_offset(good, 5) + 8] = 9; },
     "does not match its count 9"},
    {"trailing", [](auto& b) { b.push_back(0); }, "1 trailing bytes"},
    {"order",
     [&](auto& b) {
       // The first section claims to be the second.
       b[section_offset(good, 1)] = 2;
     },
     "out of order"},
    {"reserved", [&](auto& b) { b[section_offset(good, 6) + 2] = 1; }, "reserved bits set"},
    {"msr reserved", [&](auto& b) { b[section_offset(good, 5) + 8 + 4 + 4] = 1; },
     "reserved bits set in MSR"},
    {"xcrs count",
     [&](auto& b) {
       const uint32_t n = 1000;
       std::memcpy(b.data() + section_offset(good, 4) + 8, &n, 4);
     },
     "too many XCRs"},
  };
  for (const auto& c : cases) {
    auto blob = good;
    c.apply(blob);
    const auto err = error_of(blob);
    EXPECT_NE(err, "<parsed>") << c.what;
    EXPECT_NE(err.find(c.fragment), std::string::npos) << c.what << ": " << err;
  }
}
