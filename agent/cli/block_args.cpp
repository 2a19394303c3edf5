#include "agent/cli/block_args.hpp"

#include "agent/cli/qemu_opts.hpp"
#include "common/error.hpp"

#include <boost/json.hpp>

namespace ferry {

namespace json = boost::json;

namespace {

caf::error invalid(const std::string& desc) {
  return make_ferry_error(errc::invalid_argument, desc);
}

// QEMU's JSON form of -blockdev as the dotted keys of its other form.
caf::expected<void> flatten(const json::value& v, const std::string& prefix,
                            std::vector<std::pair<std::string, std::string>>& out) {
  switch (v.kind()) {
    case json::kind::object:
      for (const auto& [k, e] : v.as_object()) {
        const std::string key = prefix.empty() ? std::string{k} : prefix + "." + std::string{k};
        FERRY_TRY_VOID(flatten(e, key, out));
      }
      return {};
    case json::kind::string:
      out.emplace_back(prefix, std::string{v.as_string()});
      return {};
    case json::kind::bool_:
      out.emplace_back(prefix, v.as_bool() ? "on" : "off");
      return {};
    case json::kind::int64:
    case json::kind::uint64:
      out.emplace_back(prefix, json::serialize(v));
      return {};
    default:
      return invalid("-blockdev: parameter '" + prefix + "' has an unsupported type");
  }
}

const std::vector<std::string> blockdev_keys = {"driver",
                                                "node-name",
                                                "file",
                                                "file.driver",
                                                "file.filename",
                                                "filename",
                                                "read-only",
                                                "auto-read-only",
                                                "discard",
                                                "cache.direct",
                                                "cache.no-flush",
                                                "detect-zeroes",
                                                "file.aio",
                                                "file.locking",
                                                "file.node-name",
                                                "file.cache.direct",
                                                "file.auto-read-only",
                                                "file.discard",
                                                "aio",
                                                "locking"};

} // namespace

caf::expected<void> block_args::add(node n) {
  for (const auto& o : nodes_)
    if (o.name == n.name)
      return invalid("Duplicate nodes with node-name='" + n.name + "'");
  nodes_.push_back(std::move(n));
  return {};
}

caf::expected<void> block_args::drive(const std::string& value) {
  FERRY_TRY(o, qemu_opts::parse(value));
  FERRY_TRY_VOID(o.only({"file", "format", "if", "index", "media", "id", "node-name", "cache",
                         "discard", "read-only", "aio"}));
  if (!o.has("file"))
    return invalid("-drive: file= is required");
  node n;
  n.path = *o.get("file");
  n.driver = o.get("format").value_or("");
  if (!n.driver.empty() && n.driver != "raw" && n.driver != "qcow2")
    return invalid("-drive: format '" + n.driver + "' is not supported (raw and qcow2 are)");
  if (n.driver.empty())
    n.driver = "probe";
  // QEMU names a -drive's node itself when not told ("#block" and a number).
  n.name = o.get("node-name").value_or("#block" + std::to_string(++unnamed_ * 100 + 21));
  FERRY_TRY(ro, o.get_bool("read-only", false));
  n.read_only = ro;
  return add(std::move(n));
}

caf::expected<void> block_args::blockdev(const std::string& value) {
  std::vector<std::pair<std::string, std::string>> items;
  if (!value.empty() && value.front() == '{') {
    boost::system::error_code ec;
    const json::value v = json::parse(value, ec);
    if (ec || !v.is_object())
      return invalid("-blockdev: not a JSON object: " + (ec ? ec.message() : value));
    FERRY_TRY_VOID(flatten(v, "", items));
  } else {
    FERRY_TRY(o, qemu_opts::parse(value));
    items = o.items();
  }
  const auto get = [&](const std::string& k) -> std::optional<std::string> {
    for (const auto& [key, v] : items)
      if (key == k)
        return v;
    return std::nullopt;
  };
  for (const auto& [k, v] : items)
    if (std::find(blockdev_keys.begin(), blockdev_keys.end(), k) == blockdev_keys.end())
      return invalid("-blockdev: Invalid parameter '" + k + "'");
  node n;
  n.driver = get("driver").value_or("");
  if (n.driver.empty())
    return invalid("-blockdev: Parameter 'driver' is missing");
  if (n.driver != "file" && n.driver != "raw" && n.driver != "qcow2")
    return invalid("-blockdev: driver '" + n.driver + "' is not supported (file, raw, qcow2)");
  n.name = get("node-name").value_or("");
  if (n.name.empty())
    return invalid("-blockdev: node-name is required");
  const std::string ro = get("read-only").value_or("off");
  n.read_only = ro == "on" || ro == "true" || ro == "yes";
  if (n.driver == "file") {
    n.path = get("filename").value_or("");
    if (n.path.empty())
      return invalid("-blockdev: Parameter 'filename' is missing");
  } else if (auto child = get("file.filename")) {
    if (get("file.driver").value_or("file") != "file")
      return invalid("-blockdev: file.driver must be 'file'");
    n.path = *child;
  } else if (auto ref = get("file")) {
    n.file = *ref;
  } else {
    return invalid("-blockdev: Parameter 'file' is missing");
  }
  return add(std::move(n));
}

caf::expected<std::vector<block_device_spec>> block_args::finish() const {
  std::vector<bool> used(nodes_.size(), false);
  std::vector<block_device_spec> out;
  std::vector<std::pair<size_t, block_device_spec>> top;
  for (size_t i = 0; i < nodes_.size(); ++i) {
    const node& n = nodes_[i];
    if (n.driver == "file")
      continue;
    block_device_spec s{n.name, n.driver == "probe" ? "" : n.driver, n.path, n.read_only};
    if (!n.file.empty()) {
      size_t j = 0;
      while (j < nodes_.size() && nodes_[j].name != n.file)
        ++j;
      if (j == nodes_.size())
        return invalid("-blockdev: Cannot find device='' nor node-name='" + n.file + "'");
      if (nodes_[j].driver != "file")
        return invalid("-blockdev: node '" + n.file + "' is not a file node");
      if (used[j])
        return invalid("-blockdev: node '" + n.file + "' is already in use");
      used[j] = true;
      s.path = nodes_[j].path;
      s.read_only = s.read_only || nodes_[j].read_only;
    }
    top.emplace_back(i, std::move(s));
  }
  for (size_t i = 0; i < nodes_.size(); ++i)
    if (nodes_[i].driver == "file" && !used[i])
      top.emplace_back(
        i, block_device_spec{nodes_[i].name, "raw", nodes_[i].path, nodes_[i].read_only});
  std::sort(top.begin(), top.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  out.reserve(top.size());
  for (auto& [i, s] : top)
    out.push_back(std::move(s));
  return out;
}

} // namespace ferry
