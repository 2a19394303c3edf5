#include "agent/vmm/kvm/kvm_vm.hpp"

#include "common/error.hpp"

#include <fcntl.h>
#include <sys/ioctl.h>

#include <cerrno>
#include <cstring>

namespace ferry {

namespace {

constexpr int max_cpuid_entries = 256;

caf::expected<unique_fd> open_kvm() {
  unique_fd fd{::open("/dev/kvm", O_RDWR | O_CLOEXEC)};
  if (!fd)
    return make_ferry_error(errc::kvm_unavailable,
                            std::string{"cannot open /dev/kvm: "} + std::strerror(errno));
  const int api = ::ioctl(fd.get(), KVM_GET_API_VERSION, 0);
  if (api != KVM_API_VERSION)
    return make_ferry_error(errc::kvm_unavailable,
                            "unexpected KVM API version " + std::to_string(api));
  return fd;
}

} // namespace

caf::expected<void> kvm_available() {
  auto fd = open_kvm();
  if (!fd)
    return fd.error();
  return {};
}

int kvm_vm::check_extension(long cap) const {
  const int r = ::ioctl(vm_.get(), KVM_CHECK_EXTENSION, cap);
  return r < 0 ? 0 : r;
}

caf::expected<std::unique_ptr<kvm_vm>> kvm_vm::create(const guest_memory& mem,
                                                      const kvm_vm_options& opts) {
  auto kvm = open_kvm();
  if (!kvm)
    return kvm.error();
  std::unique_ptr<kvm_vm> vm{new kvm_vm};
  vm->kvm_ = std::move(*kvm);
  vm->mem_ = &mem;
  vm->opts_ = opts;
  vm->vm_.reset(::ioctl(vm->kvm_.get(), KVM_CREATE_VM, 0));
  if (!vm->vm_)
    return make_system_error("KVM_CREATE_VM");

  // x86 needs these two guest-physical areas for real-mode emulation; they sit
  // in the hole the memory layout keeps free of RAM.
  if (::ioctl(vm->fd(), KVM_SET_TSS_ADDR, kvm_tss_addr) < 0)
    return make_system_error("KVM_SET_TSS_ADDR");
  uint64_t idmap = kvm_identity_map_addr;
  if (::ioctl(vm->fd(), KVM_SET_IDENTITY_MAP_ADDR, &idmap) < 0)
    return make_system_error("KVM_SET_IDENTITY_MAP_ADDR");

  if (opts.dirty_log == dirty_log_kind::bitmap) {
    const int caps = vm->check_extension(KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2);
    const uint64_t want = KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE | KVM_DIRTY_LOG_INITIALLY_SET;
    if ((static_cast<uint64_t>(caps) & want) != want)
      return make_ferry_error(errc::not_supported, "KVM lacks manual dirty-log protection "
                                                   "with initially-set bitmaps");
    kvm_enable_cap cap{};
    cap.cap = KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2;
    cap.args[0] = want;
    if (::ioctl(vm->fd(), KVM_ENABLE_CAP, &cap) < 0)
      return make_system_error("KVM_ENABLE_CAP(MANUAL_DIRTY_LOG_PROTECT2)");
  } else {
    const uint32_t entries = opts.dirty_ring_entries;
    if (entries == 0 || (entries & (entries - 1)) != 0)
      return make_ferry_error(errc::invalid_argument, "dirty-ring-size must be a power of two");
    const uint64_t bytes = uint64_t{entries} * sizeof(kvm_dirty_gfn);
    long which = KVM_CAP_DIRTY_LOG_RING_ACQ_REL;
    int max = vm->check_extension(which);
    if (max == 0) {
      which = KVM_CAP_DIRTY_LOG_RING;
      max = vm->check_extension(which);
    }
    if (max == 0)
      return make_ferry_error(errc::not_supported, "this kernel offers no KVM dirty ring");
    if (bytes > static_cast<uint64_t>(max))
      return make_ferry_error(errc::invalid_argument,
                              "dirty-ring-size " + std::to_string(entries) +
                                " exceeds the kernel's maximum of " +
                                std::to_string(static_cast<uint64_t>(max) / sizeof(kvm_dirty_gfn)));
    kvm_enable_cap cap{};
    cap.cap = static_cast<uint32_t>(which);
    cap.args[0] = bytes;
    if (::ioctl(vm->fd(), KVM_ENABLE_CAP, &cap) < 0)
      return make_system_error("KVM_ENABLE_CAP(DIRTY_LOG_RING)");
  }

  vm->slots_ = plan_memory_slots(mem.size());
  for (const auto& s : vm->slots_)
    if (auto ok = vm->set_slot(s, false); !ok)
      return ok.error();

  const int mmap_size = ::ioctl(vm->kvm_.get(), KVM_GET_VCPU_MMAP_SIZE, 0);
  if (mmap_size <= 0)
    return make_system_error("KVM_GET_VCPU_MMAP_SIZE");
  vm->vcpu_mmap_size_ = static_cast<size_t>(mmap_size);

  std::vector<uint8_t> cpuid(sizeof(kvm_cpuid2) + max_cpuid_entries * sizeof(kvm_cpuid_entry2));
  auto* c2 = reinterpret_cast<kvm_cpuid2*>(cpuid.data());
  c2->nent = max_cpuid_entries;
  if (::ioctl(vm->kvm_.get(), KVM_GET_SUPPORTED_CPUID, c2) < 0)
    return make_system_error("KVM_GET_SUPPORTED_CPUID");
  vm->cpuid_ = std::move(cpuid);

  kvm_msr_list probe{};
  probe.nmsrs = 0;
  // E2BIG is the expected answer: it tells how many indices there are.
  ::ioctl(vm->kvm_.get(), KVM_GET_MSR_INDEX_LIST, &probe);
  std::vector<uint8_t> list(sizeof(kvm_msr_list) + probe.nmsrs * sizeof(uint32_t));
  auto* ml = reinterpret_cast<kvm_msr_list*>(list.data());
  ml->nmsrs = probe.nmsrs;
  if (::ioctl(vm->kvm_.get(), KVM_GET_MSR_INDEX_LIST, ml) < 0)
    return make_system_error("KVM_GET_MSR_INDEX_LIST");
  vm->msrs_.assign(ml->indices, ml->indices + ml->nmsrs);

  const int xsave2 = vm->check_extension(KVM_CAP_XSAVE2);
  vm->xsave_size_ = std::max<size_t>(sizeof(kvm_xsave), static_cast<size_t>(xsave2));
  return vm;
}

caf::expected<void> kvm_vm::set_slot(const memory_slot& s, bool log_dirty) {
  kvm_userspace_memory_region region{};
  region.slot = s.slot;
  region.flags = log_dirty ? KVM_MEM_LOG_DIRTY_PAGES : 0;
  region.guest_phys_addr = s.guest_phys;
  region.memory_size = s.size;
  region.userspace_addr = reinterpret_cast<uint64_t>(mem_->data() + s.ram_offset);
  if (::ioctl(vm_.get(), KVM_SET_USER_MEMORY_REGION, &region) < 0)
    return make_system_error("KVM_SET_USER_MEMORY_REGION(slot " + std::to_string(s.slot) + ")");
  return {};
}

caf::expected<void> kvm_vm::set_dirty_logging(bool on) {
  for (const auto& s : slots_)
    if (auto ok = set_slot(s, on); !ok)
      return ok.error();
  return {};
}

} // namespace ferry
