#pragma once
// Little-endian fields in and out of record payloads (the machines Ferry
// runs on are little endian; the stream format says so). Internal to
// protocol/: shared by the migration stream's encoders and decoders.

#include <cstdint>
#include <cstring>
#include <vector>

namespace ferry::mig::wire {

template <class T>
void put(std::vector<uint8_t>& out, T v) {
  const size_t at = out.size();
  out.resize(at + sizeof(T));
  std::memcpy(out.data() + at, &v, sizeof(T));
}

inline void put_bytes(std::vector<uint8_t>& out, const uint8_t* p, size_t n) {
  const size_t at = out.size();
  out.resize(at + n);
  if (n != 0)
    std::memcpy(out.data() + at, p, n);
}

template <class T>
T get(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

} // namespace ferry::mig::wire
