// libFuzzer: what a TLS migration channel reads after its handshake comes
// from the network (sealed_records.hpp). The first byte picks the mode:
//  - even: the rest is the wire itself, read under fixed keys with reads of
//    the sizes and kinds (control / placed) the mode byte's other bits pick;
//    the reader must end (an error or the stream's end) without a crash, an
//    over-read or a hang. Seeds hold records sealed under those keys.
//  - odd: the rest describes writes (kind, length, fill byte) sealed by a
//    writer, then one wire byte may be altered; the reader must give back
//    exactly what was written and then a clean end — or, if a byte was
//    altered, fail, never handing over control bytes that were not written.

#include "agent/transport/loopback_stream.hpp"
#include "agent/transport/tls_stream.hpp"

#include <openssl/obj_mac.h>

#include <cstdlib>
#include <cstring>
#include <numeric>
#include <vector>

namespace {

using namespace ferry;

sealed::direction_keys fuzz_keys(uint8_t seed) {
  sealed::direction_keys k;
  k.cipher_nid = sealed::record_cipher_for(NID_aes_128_gcm); // what AES suites use
  k.key.resize(16);
  std::iota(k.key.begin(), k.key.end(), seed);
  std::iota(k.iv.begin(), k.iv.end(), static_cast<uint8_t>(seed + 100));
  return k;
}

const sealed::direction_keys to_reader = fuzz_keys(1);
const sealed::direction_keys to_writer = fuzz_keys(50);

std::unique_ptr<byte_stream> reader_over(const std::vector<uint8_t>& wire) {
  auto [a, b] = make_loopback_pair();
  std::vector<uint8_t> copy = wire;
  iovec v{copy.data(), copy.size()};
  if (!a->write_all({&v, 1}) || !a->finish())
    std::abort();
  auto r = tls_stream::with_keys(std::move(b), to_writer, to_reader);
  if (!r)
    std::abort();
  return std::move(*r);
}

void read_hostile(uint8_t mode, const uint8_t* data, size_t size) {
  auto reader = reader_over({data, data + size});
  const size_t chunk = size_t{1} + (mode >> 2) * 97u;
  // Placed reads go one after another, as into a run of guest RAM (a block
  // cipher holds a partial block back for the next read's place); the wire
  // cannot hand over more than it holds.
  std::vector<uint8_t> ram(size + chunk);
  size_t at = 0;
  // Each read takes at least one wire byte or ends the stream.
  for (size_t i = 0; i <= size + 1; ++i) {
    auto r = (mode & 2) != 0 ? reader->read_placed(ram.data() + at, chunk)
                             : reader->read_some(ram.data(), chunk);
    if (!r || *r == 0)
      return;
    if (*r > chunk)
      std::abort();
    if ((mode & 2) != 0)
      at += *r;
    if (at > size)
      std::abort();
  }
  std::abort(); // more reads than wire bytes: the reader did not move
}

struct write_step {
  bool bulk;
  std::vector<uint8_t> bytes;
};

// The writer and the reader share one thread here, so everything written
// must fit the loopback's buffer (4 MiB) before anything is read.
constexpr size_t max_written = size_t{1} << 20;

std::vector<write_step> steps_from(const uint8_t* data, size_t size) {
  std::vector<write_step> steps;
  size_t total = 0;
  for (size_t i = 0; i + 2 < size; i += 3) {
    const size_t len = size_t{1} + data[i + 1] * size_t{33};
    if (total + len > max_written)
      break;
    total += len;
    steps.push_back({(data[i] & 1) != 0, std::vector<uint8_t>(len, data[i + 2])});
  }
  return steps;
}

std::vector<uint8_t> sealed_wire(std::vector<write_step>& steps) {
  auto [a, b] = make_loopback_pair();
  auto writer = tls_stream::with_keys(std::move(a), to_reader, to_writer);
  if (!writer)
    std::abort();
  for (auto& s : steps) {
    iovec v{s.bytes.data(), s.bytes.size()};
    auto ok = s.bulk ? (*writer)->write_placed({&v, 1}, 0) : (*writer)->write_all({&v, 1});
    if (!ok)
      std::abort();
  }
  if (!(*writer)->finish())
    std::abort();
  std::vector<uint8_t> wire(4096);
  size_t have = 0;
  for (;;) {
    if (wire.size() - have < 4096)
      wire.resize(wire.size() * 2);
    auto r = b->read_some(wire.data() + have, wire.size() - have);
    if (!r)
      std::abort();
    if (*r == 0)
      break;
    have += *r;
  }
  wire.resize(have);
  return wire;
}

// Reads the steps back; false at the first failed read.
bool read_back(byte_stream& reader, const std::vector<write_step>& steps, bool altered) {
  std::vector<uint8_t> got;
  for (const auto& s : steps) {
    got.assign(s.bytes.size(), 0);
    for (size_t have = 0; have < got.size();) {
      auto r = s.bulk ? reader.read_placed(got.data() + have, got.size() - have)
                      : reader.read_some(got.data() + have, got.size() - have);
      if (!r)
        return false;
      if (*r == 0)
        std::abort(); // a clean end before everything written arrived
      // Control bytes are opened whole before use: never one not written.
      if (!s.bulk && std::memcmp(got.data() + have, s.bytes.data() + have, *r) != 0)
        std::abort();
      have += *r;
    }
    if (!altered && got != s.bytes)
      std::abort();
  }
  uint8_t one = 0;
  auto end = reader.read_some(&one, 1);
  if (!end)
    return false;
  if (*end != 0)
    std::abort(); // more than was written
  return true;
}

void round_trip(const uint8_t* data, size_t size) {
  if (size < 3)
    return;
  const bool alter = (data[0] & 1) != 0;
  const size_t where = size_t{data[1]} | size_t{data[2]} << 8;
  auto steps = steps_from(data + 3, size - 3);
  if (steps.empty())
    return;
  auto wire = sealed_wire(steps);
  if (alter)
    wire[where % wire.size()] ^= static_cast<uint8_t>(data[0] | 1);
  auto reader = reader_over(wire);
  const bool whole = read_back(*reader, steps, alter);
  if (whole == alter)
    std::abort(); // an altered record was accepted, or a clean one refused
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1)
    return 0;
  if ((data[0] & 1) == 0)
    read_hostile(data[0], data + 1, size - 1);
  else
    round_trip(data + 1, size - 1);
  return 0;
}
