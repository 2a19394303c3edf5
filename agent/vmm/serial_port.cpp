#include "agent/vmm/serial_port.hpp"

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
    ++written_;
    if (sink_) {
      std::fputc(value, sink_);
      // Line-buffered so a tail -f or a test sees output as the guest makes it.
      if (value == '\n')
        std::fflush(sink_);
    }
    return;
  }
  if (reg < ports)
    regs_[reg] = value;
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
