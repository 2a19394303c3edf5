#include "agent/migration/checkpoint_staging.hpp"

#include "common/error.hpp"

#include <cstring>
#include <string>

namespace ferry {

namespace {
constexpr size_t page_bytes = 4096;
constexpr size_t no_slot = SIZE_MAX;
} // namespace

checkpoint_staging::checkpoint_staging(uint64_t ram_pages) : ram_pages_(ram_pages) {}

void checkpoint_staging::begin(uint64_t number) {
  discard();
  number_ = number;
}

caf::expected<void> checkpoint_staging::stage_page(uint64_t pfn, std::span<const uint8_t> data) {
  if (pfn >= ram_pages_)
    return make_ferry_error(errc::invalid_argument, "checkpoint " + std::to_string(number_) +
                                                      " names page " + std::to_string(pfn) +
                                                      " outside RAM (" +
                                                      std::to_string(ram_pages_) + " pages)");
  if (!data.empty() && data.size() != page_bytes)
    return make_ferry_error(errc::invalid_argument,
                            "a checkpoint page of " + std::to_string(data.size()) + " bytes");
  // A page keeps one slot for the whole checkpoint, whatever it turns
  // into: at most RAM's size is ever kept, however a peer reorders.
  staged& st = index_.try_emplace(pfn, staged{no_slot, true}).first->second;
  st.zero = data.empty();
  if (st.zero)
    return {};
  if (st.at == no_slot) {
    st.at = data_.size();
    data_.insert(data_.end(), data.begin(), data.end());
  } else {
    std::memcpy(data_.data() + st.at, data.data(), page_bytes);
  }
  return {};
}

void checkpoint_staging::for_each_page(
  const std::function<void(uint64_t pfn, std::span<const uint8_t> data)>& f) const {
  for (const auto& [pfn, st] : index_)
    f(pfn, st.zero ? std::span<const uint8_t>{}
                   : std::span<const uint8_t>{data_.data() + st.at, page_bytes});
}

void checkpoint_staging::stage_cpu_state(std::vector<uint8_t> blob) {
  cpu_ = std::move(blob);
  has_cpu_ = true;
}

caf::expected<std::vector<uint8_t>> checkpoint_staging::commit(std::span<uint8_t> ram) {
  if (!has_cpu_)
    return make_ferry_error(errc::bad_state_blob, "checkpoint " + std::to_string(number_) +
                                                    " has no CPU state: it is not whole");
  if (ram.size() < ram_pages_ * page_bytes)
    return make_ferry_error(errc::invalid_argument, "guest RAM smaller than the staging area's");
  for (const auto& [pfn, st] : index_) {
    uint8_t* page = ram.data() + pfn * page_bytes;
    if (st.zero)
      std::memset(page, 0, page_bytes);
    else
      std::memcpy(page, data_.data() + st.at, page_bytes);
  }
  auto cpu = std::move(cpu_);
  discard();
  return cpu;
}

void checkpoint_staging::discard() {
  index_.clear();
  data_.clear();
  cpu_.clear();
  has_cpu_ = false;
}

} // namespace ferry
