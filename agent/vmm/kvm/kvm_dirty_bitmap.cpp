#include "agent/vmm/kvm/kvm_dirty_bitmap.hpp"

#include "common/error.hpp"

#include <sys/ioctl.h>

#include <algorithm>

namespace ferry {

kvm_dirty_bitmap::kvm_dirty_bitmap(kvm_vm& vm) : vm_(vm) {
  for (const auto& s : vm_.slots())
    scratch_.emplace_back((s.size / page_size + 63) / 64, 0);
}

caf::expected<void> kvm_dirty_bitmap::start() {
  if (vm_.options().dirty_log != dirty_log_kind::bitmap)
    return make_ferry_error(errc::not_supported, "this VM tracks dirty pages with the dirty ring");
  if (auto ok = vm_.set_dirty_logging(true); !ok)
    return ok;
  active_ = true;
  return {};
}

void kvm_dirty_bitmap::stop() {
  if (active_)
    (void) vm_.set_dirty_logging(false);
  active_ = false;
}

caf::expected<void> kvm_dirty_bitmap::sync(dirty_bitmap& out) {
  if (!active_)
    return make_ferry_error(errc::bad_run_state, "dirty logging is not started");
  const auto& slots = vm_.slots();
  for (size_t i = 0; i < slots.size(); ++i) {
    auto& buf = scratch_[i];
    struct kvm_dirty_log get {};
    get.slot = slots[i].slot;
    get.dirty_bitmap = buf.data();
    if (::ioctl(vm_.fd(), KVM_GET_DIRTY_LOG, &get) < 0)
      return make_system_error("KVM_GET_DIRTY_LOG");
    if (std::all_of(buf.begin(), buf.end(), [](uint64_t w) { return w == 0; }))
      continue;
    const uint64_t pages = slots[i].size / page_size;
    kvm_clear_dirty_log clear{};
    clear.slot = slots[i].slot;
    clear.first_page = 0;
    clear.num_pages = static_cast<uint32_t>(pages);
    clear.dirty_bitmap = buf.data();
    if (::ioctl(vm_.fd(), KVM_CLEAR_DIRTY_LOG, &clear) < 0)
      return make_system_error("KVM_CLEAR_DIRTY_LOG");
    out.or_words(slots[i].guest_phys / page_size, buf.data(), pages);
  }
  return {};
}

} // namespace ferry
