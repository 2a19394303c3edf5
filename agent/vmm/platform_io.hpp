#pragma once
// The guest's port-I/O and MMIO world: the serial port, fast A20 at 0x92, and
// a counter for everything else (ignored, as BRIEF §2 specifies).

#include "agent/vmm/serial_port.hpp"

#include <atomic>
#include <cstdint>
#include <memory>

namespace ferry {

class platform_io {
public:
  explicit platform_io(std::FILE* serial_sink) : serial_(serial_sink) {}

  // `data` holds `size` bytes; for reads we fill it.
  void port_io(uint16_t port, bool is_write, uint8_t* data, uint32_t size);
  void mmio(uint64_t addr, bool is_write, uint8_t* data, uint32_t len);

  serial_port& serial() { return serial_; }
  uint8_t port92() const { return port92_.load(); }
  uint64_t unknown_port_io() const { return unknown_pio_.load(); }
  uint64_t unknown_mmio() const { return unknown_mmio_.load(); }

private:
  serial_port serial_;
  std::atomic<uint8_t> port92_{0};
  std::atomic<uint64_t> unknown_pio_{0};
  std::atomic<uint64_t> unknown_mmio_{0};
};

} // namespace ferry
