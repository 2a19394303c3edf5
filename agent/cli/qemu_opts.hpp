#pragma once
// QEMU's option syntax: "value,key=value,key=value" (QemuOpts) with an
// optional implied first key, ",," as a literal comma, and sizes with
// K/M/G/T suffixes (binary, as QEMU reads -m and size=).

#include <caf/expected.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace ferry {

class qemu_opts {
public:
  // `implied_key` names the first element when it has no "key=" (e.g. "file"
  // for -serial, "type" for -object). Duplicate keys are an error.
  static caf::expected<qemu_opts> parse(const std::string& text,
                                        const std::string& implied_key = {});

  std::optional<std::string> get(const std::string& key) const;
  bool has(const std::string& key) const { return get(key).has_value(); }
  // Fails naming the first key not in `known` (QEMU: "Invalid parameter 'x'").
  caf::expected<void> only(const std::vector<std::string>& known) const;
  caf::expected<bool> get_bool(const std::string& key, bool fallback) const;
  caf::expected<uint64_t> get_size(const std::string& key, uint64_t fallback) const;
  caf::expected<uint64_t> get_uint(const std::string& key, uint64_t fallback) const;
  const std::vector<std::pair<std::string, std::string>>& items() const { return items_; }

private:
  std::vector<std::pair<std::string, std::string>> items_;
};

// "512M", "1G", "1024" (bytes unless `default_unit` says otherwise: -m takes
// mebibytes when no suffix is given).
caf::expected<uint64_t> parse_size(const std::string& text, uint64_t default_unit = 1);
caf::expected<uint64_t> parse_uint(const std::string& text);

// A value made safe to embed in an option string: each ',' doubled, so a path
// like "/a,format=qcow2" stays one value instead of adding an option
// (libvirt escapes file names for QEMU the same way).
std::string qemu_opt_escape(const std::string& value);

} // namespace ferry
