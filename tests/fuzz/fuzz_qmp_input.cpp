// libFuzzer: arbitrary bytes from a QMP client, split at arbitrary points,
// through the framer, the envelope checks and the schema's argument checks.
// Must never crash or hang.

#include "protocol/qapi_catalog.hpp"
#include "protocol/qapi_validate.hpp"
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
      if (const auto* json = std::get_if<boost::json::value>(&v)) {
        auto req = ferry::qmp::parse_request(*json);
        const auto* r = std::get_if<ferry::qmp::request>(&req);
        if (r == nullptr)
          continue;
        const auto& cat = ferry::qapi::catalog::migration();
        if (const auto* cmd = cat.find(r->command); cmd != nullptr && cmd->contains("command"))
          (void) ferry::qapi::check_arguments(cat, *cmd, r->arguments);
      }
  return 0;
}
