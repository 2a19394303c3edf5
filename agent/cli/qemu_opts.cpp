#include "agent/cli/qemu_opts.hpp"

#include "common/error.hpp"

#include <algorithm>
#include <cctype>
#include <limits>

namespace ferry {

namespace {

caf::error invalid(const std::string& desc) {
  return make_ferry_error(errc::invalid_argument, desc);
}

} // namespace

caf::expected<uint64_t> parse_uint(const std::string& text) {
  if (text.empty())
    return invalid("expected a number, got an empty string");
  uint64_t v = 0;
  size_t i = 0;
  int base = 10;
  if (text.size() > 2 && text[0] == '0' && (text[1] == 'x' || text[1] == 'X')) {
    base = 16;
    i = 2;
  }
  for (; i < text.size(); ++i) {
    const char c = static_cast<char>(std::tolower(static_cast<unsigned char>(text[i])));
    int d;
    if (c >= '0' && c <= '9')
      d = c - '0';
    else if (base == 16 && c >= 'a' && c <= 'f')
      d = c - 'a' + 10;
    else
      return invalid("'" + text + "' is not a number");
    if (v > (std::numeric_limits<uint64_t>::max() - static_cast<uint64_t>(d)) /
              static_cast<uint64_t>(base))
      return invalid("'" + text + "' is too large");
    v = v * static_cast<uint64_t>(base) + static_cast<uint64_t>(d);
  }
  return v;
}

caf::expected<uint64_t> parse_size(const std::string& text, uint64_t default_unit) {
  if (text.empty())
    return invalid("expected a size, got an empty string");
  std::string digits = text;
  uint64_t unit = default_unit;
  const char last = static_cast<char>(std::toupper(static_cast<unsigned char>(text.back())));
  const std::string suffixes = "BKMGT";
  if (auto pos = suffixes.find(last); pos != std::string::npos) {
    digits.pop_back();
    unit = uint64_t{1} << (10 * pos);
  }
  auto n = parse_uint(digits);
  if (!n)
    return invalid("'" + text + "' is not a size (like 512M or 1G)");
  if (*n != 0 && unit > std::numeric_limits<uint64_t>::max() / *n)
    return invalid("size '" + text + "' is too large");
  return *n * unit;
}

std::string qemu_opt_escape(const std::string& value) {
  std::string out;
  out.reserve(value.size());
  for (const char c : value) {
    out += c;
    if (c == ',')
      out += ',';
  }
  return out;
}

caf::expected<qemu_opts> qemu_opts::parse(const std::string& text, const std::string& implied_key) {
  qemu_opts out;
  std::vector<std::string> parts;
  std::string cur;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == ',') {
      if (i + 1 < text.size() && text[i + 1] == ',') {
        cur += ',';
        ++i;
        continue;
      }
      parts.push_back(std::move(cur));
      cur.clear();
      continue;
    }
    cur += text[i];
  }
  parts.push_back(std::move(cur));
  for (size_t i = 0; i < parts.size(); ++i) {
    const auto& p = parts[i];
    if (p.empty())
      return invalid("empty element in option string '" + text + "'");
    const auto eq = p.find('=');
    std::string key;
    std::string value;
    if (eq == std::string::npos) {
      if (i == 0 && !implied_key.empty()) {
        key = implied_key;
        value = p;
      } else {
        // QEMU reads a bare "key" as key=on.
        key = p;
        value = "on";
      }
    } else {
      key = p.substr(0, eq);
      value = p.substr(eq + 1);
    }
    if (key.empty())
      return invalid("missing parameter name in '" + text + "'");
    if (out.has(key))
      return invalid("duplicate parameter '" + key + "'");
    out.items_.emplace_back(std::move(key), std::move(value));
  }
  return out;
}

std::optional<std::string> qemu_opts::get(const std::string& key) const {
  for (const auto& [k, v] : items_)
    if (k == key)
      return v;
  return std::nullopt;
}

caf::expected<void> qemu_opts::only(const std::vector<std::string>& known) const {
  for (const auto& [k, v] : items_)
    if (std::find(known.begin(), known.end(), k) == known.end())
      return invalid("Invalid parameter '" + k + "'");
  return {};
}

caf::expected<bool> qemu_opts::get_bool(const std::string& key, bool fallback) const {
  auto v = get(key);
  if (!v)
    return fallback;
  if (*v == "on" || *v == "yes" || *v == "true")
    return true;
  if (*v == "off" || *v == "no" || *v == "false")
    return false;
  return invalid("Parameter '" + key + "' expects 'on' or 'off'");
}

caf::expected<uint64_t> qemu_opts::get_size(const std::string& key, uint64_t fallback) const {
  auto v = get(key);
  if (!v)
    return fallback;
  auto n = parse_size(*v);
  if (!n)
    return invalid("Parameter '" + key + "' expects a size: " + describe(n.error()));
  return n;
}

caf::expected<uint64_t> qemu_opts::get_uint(const std::string& key, uint64_t fallback) const {
  auto v = get(key);
  if (!v)
    return fallback;
  auto n = parse_uint(*v);
  if (!n)
    return invalid("Parameter '" + key + "' expects a number: " + describe(n.error()));
  return n;
}

} // namespace ferry
