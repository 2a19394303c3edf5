#pragma once
// The transmit side of a 16550 UART at 0x3f8: bytes the guest writes to THR
// go to a sink (the -serial file or stdout); LSR always reads "transmitter
// empty" so polling guests never wait. There is no receive path.

#include <cstdint>
#include <cstdio>
#include <mutex>
#include <string>
#include <string_view>

namespace ferry {

class serial_port {
public:
  static constexpr uint16_t base = 0x3f8;
  static constexpr uint16_t ports = 8;

  serial_port() = default;
  // Takes ownership of `sink` (closed on destruction unless stdout).
  explicit serial_port(std::FILE* sink) : sink_(sink) {}
  serial_port(const serial_port&) = delete;
  serial_port& operator=(const serial_port&) = delete;
  ~serial_port();

  void write(uint16_t port, uint8_t value);
  // Bytes as the guest would transmit them, one THR write each (the host
  // playing a guest: the -accel none dirtier, its boot step).
  void write_text(std::string_view text);
  uint8_t read(uint16_t port) const;
  uint64_t bytes_written() const;

  // Output commit (a COLO primary): while held, transmitted bytes wait here
  // instead of reaching the sink, so nobody outside sees output a failover
  // could take back. release(upto) lets them through up to a position of
  // bytes_written() (taken when the checkpoint covering them was made);
  // hold(false) lets everything through and stops holding.
  void hold(bool on);
  void release(uint64_t upto);
  // The held bytes never go out (another copy of the guest took over from
  // the checkpoint before them and writes them itself); holding goes on.
  void discard_held();
  size_t held_bytes() const;
  // The held bytes from `position` on (those before it are skipped), and
  // where the held bytes begin.
  std::string held_from(uint64_t position) const;
  uint64_t held_start() const;

  // COLO's compare mode (a secondary running too): its output is counted
  // in the primary's positions — renumber() drops what is held and says
  // where the next byte stands (a checkpoint's output position) —, and
  // bytes before suppress_until()'s position never reach the sink (a reader
  // saw them from the primary already).
  void renumber(uint64_t position);
  void suppress_until(uint64_t position);

private:
  void emit_locked(uint8_t value, uint64_t position);

  mutable std::mutex mtx_;
  std::FILE* sink_ = nullptr;
  uint8_t regs_[ports] = {};
  uint64_t written_ = 0;
  bool holding_ = false;
  std::string held_; // bytes written_-held_.size() .. written_
  uint64_t suppressed_until_ = 0;
};

} // namespace ferry
