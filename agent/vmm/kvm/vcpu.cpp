#include "agent/vmm/kvm/vcpu.hpp"

#include "agent/vmm/kvm/kvm_dirty_ring.hpp"
#include "common/error.hpp"
#include "common/hex.hpp"

#include <sys/ioctl.h>
#include <sys/mman.h>

#include <cerrno>
#include <cstring>

namespace ferry {

namespace {

// Fixed-size kvm_msrs with a flexible array, built on a byte buffer.
struct msr_buffer {
  explicit msr_buffer(size_t n) : bytes(sizeof(kvm_msrs) + n * sizeof(kvm_msr_entry)) {
    get()->nmsrs = static_cast<uint32_t>(n);
  }
  kvm_msrs* get() { return reinterpret_cast<kvm_msrs*>(bytes.data()); }
  std::vector<uint8_t> bytes;
};

} // namespace

caf::expected<std::unique_ptr<vcpu>> vcpu::create(kvm_vm& vm, uint32_t index, platform_io& io,
                                                  kvm_dirty_ring* ring) {
  std::unique_ptr<vcpu> v{new vcpu(vm, index, io, ring)};
  v->fd_.reset(::ioctl(vm.fd(), KVM_CREATE_VCPU, index));
  if (!v->fd_)
    return make_system_error("KVM_CREATE_VCPU");
  void* run =
    ::mmap(nullptr, vm.vcpu_mmap_size(), PROT_READ | PROT_WRITE, MAP_SHARED, v->fd_.get(), 0);
  if (run == MAP_FAILED)
    return make_system_error("mmap(kvm_run)");
  v->run_ = static_cast<kvm_run*>(run);
  if (vm.options().dirty_log == dirty_log_kind::ring) {
    v->ring_bytes_ = size_t{vm.options().dirty_ring_entries} * sizeof(kvm_dirty_gfn);
    void* r = ::mmap(nullptr, v->ring_bytes_, PROT_READ | PROT_WRITE, MAP_SHARED, v->fd_.get(),
                     static_cast<off_t>(KVM_DIRTY_LOG_PAGE_OFFSET * page_size));
    if (r == MAP_FAILED)
      return make_system_error("mmap(dirty ring)");
    v->ring_map_ = r;
    if (ring != nullptr)
      ring->add_ring(static_cast<kvm_dirty_gfn*>(r), vm.options().dirty_ring_entries);
  }
  if (auto ok = v->setup_cpuid(); !ok)
    return ok.error();
  if (auto ok = v->probe_msrs(); !ok)
    return ok.error();
  return v;
}

vcpu::~vcpu() {
  if (ring_map_ != nullptr) {
    if (ring_ != nullptr)
      ring_->remove_ring(static_cast<const kvm_dirty_gfn*>(ring_map_));
    ::munmap(ring_map_, ring_bytes_);
  }
  if (run_ != nullptr)
    ::munmap(run_, vm_.vcpu_mmap_size());
}

caf::expected<void> vcpu::setup_cpuid() {
  std::vector<uint8_t> buf = vm_.supported_cpuid();
  auto* c = reinterpret_cast<kvm_cpuid2*>(buf.data());
  for (uint32_t i = 0; i < c->nent; ++i) {
    auto& e = c->entries[i];
    if (e.function == 1) {
      e.ebx = (e.ebx & 0x00ffffffU) | (index_ << 24); // initial APIC ID
      e.ecx |= 1U << 31;                              // hypervisor present
    } else if (e.function == 0xb || e.function == 0x1f) {
      e.edx = index_; // x2APIC ID
    }
  }
  if (::ioctl(fd_.get(), KVM_SET_CPUID2, c) < 0)
    return make_system_error("KVM_SET_CPUID2");
  return {};
}

caf::expected<void> vcpu::probe_msrs() {
  // KVM lists MSRs it *may* support; keep the ones this vCPU really reads and
  // accepts back (some PV MSRs read fine but refuse a host write without the
  // matching guest feature), so save and restore never stop half-way.
  msr_buffer one{1};
  for (uint32_t idx : vm_.msr_indices()) {
    one.get()->entries[0] = {};
    one.get()->entries[0].index = idx;
    if (::ioctl(fd_.get(), KVM_GET_MSRS, one.get()) != 1)
      continue;
    if (::ioctl(fd_.get(), KVM_SET_MSRS, one.get()) != 1)
      continue;
    msrs_.push_back(idx);
  }
  return {};
}

caf::expected<void> vcpu::reset_real_mode(uint16_t ip) {
  kvm_sregs s{};
  if (::ioctl(fd_.get(), KVM_GET_SREGS, &s) < 0)
    return make_system_error("KVM_GET_SREGS");
  for (kvm_segment* seg : {&s.cs, &s.ds, &s.es, &s.fs, &s.gs, &s.ss}) {
    seg->base = 0;
    seg->selector = 0;
    seg->limit = 0xffff;
  }
  if (::ioctl(fd_.get(), KVM_SET_SREGS, &s) < 0)
    return make_system_error("KVM_SET_SREGS");
  kvm_regs r{};
  r.rip = ip;
  r.rflags = 0x2;
  r.rsp = ip; // a BIOS leaves the stack just below the boot sector
  r.rdx = 0x80;
  return set_regs(r);
}

caf::expected<kvm_regs> vcpu::regs() const {
  kvm_regs r{};
  if (::ioctl(fd_.get(), KVM_GET_REGS, &r) < 0)
    return make_system_error("KVM_GET_REGS");
  return r;
}

caf::expected<void> vcpu::set_regs(const kvm_regs& r) {
  if (::ioctl(fd_.get(), KVM_SET_REGS, &r) < 0)
    return make_system_error("KVM_SET_REGS");
  return {};
}

caf::expected<vcpu_state> vcpu::save() const {
  vcpu_state st;
  const int fd = fd_.get();
  if (::ioctl(fd, KVM_GET_REGS, &st.regs) < 0)
    return make_system_error("KVM_GET_REGS");
  if (::ioctl(fd, KVM_GET_SREGS, &st.sregs) < 0)
    return make_system_error("KVM_GET_SREGS");
  st.xsave.assign(vm_.xsave_size(), 0);
  const unsigned long get_xsave =
    vm_.xsave_size() > sizeof(kvm_xsave) ? KVM_GET_XSAVE2 : KVM_GET_XSAVE;
  if (::ioctl(fd, get_xsave, st.xsave.data()) < 0)
    return make_system_error("KVM_GET_XSAVE");
  if (::ioctl(fd, KVM_GET_XCRS, &st.xcrs) < 0)
    return make_system_error("KVM_GET_XCRS");
  msr_buffer msrs{msrs_.size()};
  for (size_t i = 0; i < msrs_.size(); ++i) {
    msrs.get()->entries[i] = {};
    msrs.get()->entries[i].index = msrs_[i];
  }
  const int got = ::ioctl(fd, KVM_GET_MSRS, msrs.get());
  if (got < 0)
    return make_system_error("KVM_GET_MSRS");
  if (static_cast<size_t>(got) != msrs_.size())
    return make_ferry_error(errc::system_error, "KVM_GET_MSRS stopped at MSR " +
                                                  to_hex(msrs_[static_cast<size_t>(got)]));
  st.msrs.assign(msrs.get()->entries, msrs.get()->entries + got);
  if (::ioctl(fd, KVM_GET_VCPU_EVENTS, &st.events) < 0)
    return make_system_error("KVM_GET_VCPU_EVENTS");
  if (::ioctl(fd, KVM_GET_DEBUGREGS, &st.debugregs) < 0)
    return make_system_error("KVM_GET_DEBUGREGS");
  if (::ioctl(fd, KVM_GET_MP_STATE, &st.mp_state) < 0)
    return make_system_error("KVM_GET_MP_STATE");
  return st;
}

caf::expected<void> vcpu::restore(const vcpu_state& st) {
  const int fd = fd_.get();
  if (st.xsave.size() > vm_.xsave_size())
    return make_ferry_error(errc::not_supported, "saved XSAVE area (" +
                                                   std::to_string(st.xsave.size()) +
                                                   " bytes) is larger than this host's");
  if (::ioctl(fd, KVM_SET_SREGS, &st.sregs) < 0)
    return make_system_error("KVM_SET_SREGS");
  if (::ioctl(fd, KVM_SET_REGS, &st.regs) < 0)
    return make_system_error("KVM_SET_REGS");
  std::vector<uint8_t> xs(vm_.xsave_size(), 0);
  std::memcpy(xs.data(), st.xsave.data(), st.xsave.size());
  if (::ioctl(fd, KVM_SET_XSAVE, xs.data()) < 0)
    return make_system_error("KVM_SET_XSAVE");
  if (::ioctl(fd, KVM_SET_XCRS, &st.xcrs) < 0)
    return make_system_error("KVM_SET_XCRS");
  msr_buffer msrs{st.msrs.size()};
  std::copy(st.msrs.begin(), st.msrs.end(), msrs.get()->entries);
  const int set = ::ioctl(fd, KVM_SET_MSRS, msrs.get());
  if (set < 0)
    return make_system_error("KVM_SET_MSRS");
  if (static_cast<size_t>(set) != st.msrs.size())
    return make_ferry_error(errc::not_supported, "KVM_SET_MSRS refused MSR " +
                                                   to_hex(st.msrs[static_cast<size_t>(set)].index));
  kvm_vcpu_events ev = st.events;
  // Only restore what the blob says is valid; NMI/SIPI/SMM fields are flagged.
  ev.flags &= KVM_VCPUEVENT_VALID_NMI_PENDING | KVM_VCPUEVENT_VALID_SIPI_VECTOR |
              KVM_VCPUEVENT_VALID_SHADOW | KVM_VCPUEVENT_VALID_SMM | KVM_VCPUEVENT_VALID_PAYLOAD;
  if (::ioctl(fd, KVM_SET_VCPU_EVENTS, &ev) < 0)
    return make_system_error("KVM_SET_VCPU_EVENTS");
  kvm_debugregs dr = st.debugregs;
  dr.flags = 0;
  if (::ioctl(fd, KVM_SET_DEBUGREGS, &dr) < 0)
    return make_system_error("KVM_SET_DEBUGREGS");
  if (::ioctl(fd, KVM_SET_MP_STATE, &st.mp_state) < 0)
    return make_system_error("KVM_SET_MP_STATE");
  return {};
}

vcpu_exit vcpu::run_once() {
  if (::ioctl(fd_.get(), KVM_RUN, 0) < 0) {
    if (errno == EINTR || errno == EAGAIN)
      return vcpu_exit::interrupted;
    last_error_ = std::string{"KVM_RUN: "} + std::strerror(errno);
    return vcpu_exit::failed;
  }
  switch (run_->exit_reason) {
    case KVM_EXIT_IO: {
      auto* data = reinterpret_cast<uint8_t*>(run_) + run_->io.data_offset;
      for (uint32_t i = 0; i < run_->io.count; ++i)
        io_.port_io(run_->io.port, run_->io.direction == KVM_EXIT_IO_OUT,
                    data + size_t{i} * run_->io.size, run_->io.size);
      return vcpu_exit::handled;
    }
    case KVM_EXIT_MMIO:
      io_.mmio(run_->mmio.phys_addr, run_->mmio.is_write != 0, run_->mmio.data, run_->mmio.len);
      return vcpu_exit::handled;
    case KVM_EXIT_HLT:
      return vcpu_exit::halted;
    case KVM_EXIT_SHUTDOWN:
      return vcpu_exit::shutdown;
    case KVM_EXIT_INTR:
      return vcpu_exit::interrupted;
    case KVM_EXIT_DIRTY_RING_FULL:
      if (ring_ != nullptr) {
        if (auto ok = ring_->harvest_for_full_ring(index_); !ok) {
          last_error_ = describe(ok.error());
          return vcpu_exit::failed;
        }
      }
      return vcpu_exit::handled;
    case KVM_EXIT_FAIL_ENTRY:
      last_error_ = "KVM entry failed, hardware reason " +
                    to_hex(run_->fail_entry.hardware_entry_failure_reason);
      return vcpu_exit::failed;
    case KVM_EXIT_INTERNAL_ERROR:
      last_error_ = "KVM internal error, suberror " + std::to_string(run_->internal.suberror);
      return vcpu_exit::failed;
    default:
      last_error_ = "unhandled KVM exit reason " + std::to_string(run_->exit_reason);
      return vcpu_exit::failed;
  }
}

} // namespace ferry
