#pragma once
// Native-endian (x86: little-endian) field access for Ferry's state blobs:
// append a value to a blob being written, load one from a blob being read.
// Readers check lengths before they load.

#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

namespace ferry {

template <class T>
void append_bytes(std::vector<uint8_t>& out, const T& v) {
  static_assert(std::is_trivially_copyable_v<T>);
  const auto* p = reinterpret_cast<const uint8_t*>(&v);
  out.insert(out.end(), p, p + sizeof(T));
}

template <class T>
T load_bytes(const uint8_t* p) {
  static_assert(std::is_trivially_copyable_v<T>);
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

} // namespace ferry
