#pragma once
// The only way Ferry includes <linux/kvm.h>.
//
// The uapi headers wrap flexible arrays in __DECLARE_FLEX_ARRAY, whose C++
// expansion adds an empty struct member of size 1. That shifts the array and
// changes sizeof(kvm_cpuid2), kvm_msrs, kvm_msr_list and kvm_xsave — and with
// it the ioctl numbers, which encode the struct size (KVM then answers
// EINVAL). Redefining the macro to the C layout before <linux/kvm.h> is read
// restores the kernel ABI; the static_asserts below hold us to it.

// Treated as a system header: the C-layout macro uses GNU extensions.
#pragma GCC system_header

#include <linux/stddef.h>
#undef __DECLARE_FLEX_ARRAY
#define __DECLARE_FLEX_ARRAY(TYPE, NAME)                                                           \
  struct {                                                                                         \
    TYPE NAME[0];                                                                                  \
  }

#include <linux/kvm.h>

static_assert(sizeof(kvm_cpuid2) == 8, "kvm_cpuid2 must match the C ABI");
static_assert(sizeof(kvm_msrs) == 8, "kvm_msrs must match the C ABI");
static_assert(sizeof(kvm_msr_list) == 4, "kvm_msr_list must match the C ABI");
static_assert(sizeof(kvm_xsave) == 4096, "kvm_xsave must match the C ABI");
