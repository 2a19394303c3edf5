// libFuzzer: ferry-agent's command line (NUL-separated words) and QEMU option
// strings. Bad input must become an error, never a crash.

#include "agent/cli/qemu_opts.hpp"
#include "agent/cli/vm_config.hpp"

#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<std::string> words(1);
  for (size_t i = 0; i < size; ++i) {
    if (data[i] == 0)
      words.emplace_back();
    else
      words.back() += static_cast<char>(data[i]);
  }
  (void) ferry::parse_vm_args(words);
  for (const auto& w : words) {
    (void) ferry::qemu_opts::parse(w, "type");
    (void) ferry::parse_size(w);
  }
  return 0;
}
