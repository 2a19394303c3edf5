#include "agent/vmm/platform_io.hpp"

#include <cstring>

namespace ferry {

namespace {
constexpr uint16_t port_fast_a20 = 0x92;
}

void platform_io::port_io(uint16_t port, bool is_write, uint8_t* data, uint32_t size) {
  if (port >= serial_port::base && port < serial_port::base + serial_port::ports) {
    if (is_write)
      serial_.write(port, data[0]);
    else
      data[0] = serial_.read(port);
    return;
  }
  if (port == port_fast_a20) {
    // A20 is always enabled in our flat RAM; we only remember the value so a
    // guest reading it back sees what it wrote (bit 0, reset, is ignored).
    if (is_write)
      port92_.store(static_cast<uint8_t>(data[0] & ~1U));
    else
      data[0] = port92_.load();
    return;
  }
  unknown_pio_.fetch_add(1, std::memory_order_relaxed);
  if (!is_write)
    std::memset(data, 0xff, size);
}

void platform_io::mmio(uint64_t, bool is_write, uint8_t* data, uint32_t len) {
  unknown_mmio_.fetch_add(1, std::memory_order_relaxed);
  if (!is_write)
    std::memset(data, 0xff, len);
}

} // namespace ferry
