#include "agent/vmm/serial_port.hpp"

#include <algorithm>

namespace ferry {

namespace {
constexpr uint16_t thr = 0;
constexpr uint16_t lcr = 3;
constexpr uint16_t lsr = 5;
constexpr uint8_t lcr_dlab = 0x80;
constexpr uint8_t lsr_idle = 0x60; // THR empty | transmitter empty
} // namespace

serial_port::~serial_port() {
  if (sink_ && sink_ != stdout)
    std::fclose(sink_);
}

void serial_port::write_text(std::string_view text) {
  for (char c : text)
    write(base + thr, static_cast<uint8_t>(c));
}

void serial_port::write(uint16_t port, uint8_t value) {
  std::lock_guard guard{mtx_};
  const uint16_t reg = static_cast<uint16_t>(port - base);
  if (reg == thr && (regs_[lcr] & lcr_dlab) == 0) {
    if (holding_)
      held_.push_back(static_cast<char>(value));
    else
      emit_locked(value, written_);
    ++written_;
    return;
  }
  if (reg < ports)
    regs_[reg] = value;
}

void serial_port::emit_locked(uint8_t value, uint64_t position) {
  if (sink_ == nullptr || position < suppressed_until_)
    return;
  std::fputc(value, sink_);
  // Line-buffered so a tail -f or a test sees output as the guest makes it.
  if (value == '\n')
    std::fflush(sink_);
}

void serial_port::hold(bool on) {
  std::lock_guard guard{mtx_};
  if (!on) {
    uint64_t at = written_ - held_.size();
    for (char c : held_)
      emit_locked(static_cast<uint8_t>(c), at++);
    held_.clear();
    if (sink_)
      std::fflush(sink_);
  }
  holding_ = on;
}

void serial_port::release(uint64_t upto) {
  std::lock_guard guard{mtx_};
  const uint64_t first = written_ - held_.size();
  if (upto <= first)
    return;
  const size_t n = static_cast<size_t>(std::min<uint64_t>(upto - first, held_.size()));
  for (size_t i = 0; i < n; ++i)
    emit_locked(static_cast<uint8_t>(held_[i]), first + i);
  held_.erase(0, n);
  if (sink_)
    std::fflush(sink_);
}

std::string serial_port::held_from(uint64_t position) const {
  std::lock_guard guard{mtx_};
  const uint64_t first = written_ - held_.size();
  if (position >= written_)
    return {};
  return held_.substr(static_cast<size_t>(position > first ? position - first : 0));
}

uint64_t serial_port::held_start() const {
  std::lock_guard guard{mtx_};
  return written_ - held_.size();
}

void serial_port::renumber(uint64_t position) {
  std::lock_guard guard{mtx_};
  held_.clear();
  written_ = position;
}

void serial_port::suppress_until(uint64_t position) {
  std::lock_guard guard{mtx_};
  suppressed_until_ = position;
}

void serial_port::discard_held() {
  std::lock_guard guard{mtx_};
  held_.clear();
}

size_t serial_port::held_bytes() const {
  std::lock_guard guard{mtx_};
  return held_.size();
}

uint8_t serial_port::read(uint16_t port) const {
  std::lock_guard guard{mtx_};
  const uint16_t reg = static_cast<uint16_t>(port - base);
  if (reg == lsr)
    return lsr_idle;
  return reg < ports ? regs_[reg] : 0xff;
}

uint64_t serial_port::bytes_written() const {
  std::lock_guard guard{mtx_};
  return written_;
}

} // namespace ferry
