// libFuzzer: arbitrary bytes from a QMP client, split at arbitrary points,
// through the framer and the envelope checks. Must never crash or hang.

#include "protocol/qmp_framing.hpp"
#include "protocol/qmp_request.hpp"

#include <cstddef>
#include <cstdint>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0)
    return 0;
  // The first byte picks where reads are split, the rest is the stream.
  const size_t step = 1 + data[0] % 64;
  std::string_view in{reinterpret_cast<const char*>(data + 1), size - 1};
  ferry::qmp::framer f;
  for (size_t at = 0; at < in.size(); at += step)
    for (const auto& v : f.feed(in.substr(at, step)))
      if (const auto* json = std::get_if<boost::json::value>(&v))
        (void) ferry::qmp::parse_request(*json);
  return 0;
}
