#include "agent/daemon/path_confinement.hpp"

#include "common/error.hpp"

#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>

namespace ferry {

namespace {

caf::error refused(const std::string& msg) {
  return make_ferry_error(errc::invalid_argument, msg);
}

// realpath(3) as a value; nothing with errno set when it fails.
std::optional<std::string> resolve(const std::string& path) {
  std::unique_ptr<char, decltype(&std::free)> r{::realpath(path.c_str(), nullptr), &std::free};
  if (!r)
    return std::nullopt;
  return std::string{r.get()};
}

bool inside(const std::string& path, const std::string& dir) {
  if (dir == "/")
    return path.size() > 1;
  return path.size() > dir.size() && path.compare(0, dir.size(), dir) == 0 &&
         path[dir.size()] == '/';
}

std::string listing(const std::vector<std::string>& dirs) {
  if (dirs.empty())
    return "none configured";
  std::string out;
  for (const auto& d : dirs)
    out += (out.empty() ? "" : ", ") + d;
  return out;
}

// `path` resolved, when it (or, with `may_be_new`, its directory) exists and
// lies inside one of `dirs`; else why not.
caf::expected<std::string> confine(const std::string& path, const std::vector<std::string>& dirs,
                                   bool may_be_new, const std::string& what,
                                   const std::string& key) {
  if (path.empty() || path[0] != '/')
    return refused(what + " '" + path + "' must be an absolute path");
  auto real = resolve(path);
  if (!real && errno == ENOENT && may_be_new) {
    // A RAM file the guest will create: its directory must exist and be
    // allowed; the name itself may not climb out.
    const auto slash = path.rfind('/');
    const std::string base = path.substr(slash + 1);
    if (base.empty() || base == "." || base == "..")
      return refused(what + " '" + path + "' does not name a file");
    auto parent = resolve(slash == 0 ? "/" : path.substr(0, slash));
    if (parent)
      real = (*parent == "/" ? "" : *parent) + "/" + base;
  }
  if (!real)
    return refused(what + " '" + path + "': " + std::strerror(errno));
  for (const auto& d : dirs)
    if (auto dir = resolve(d); dir && inside(*real, *dir))
      return *real;
  return refused(
    what + " '" + path + "'" + (*real != path ? " (resolves to '" + *real + "')" : "") +
    " is outside the directories this agent allows (" + key + ": " + listing(dirs) + ")");
}

} // namespace

caf::expected<guest_spec> confine_guest_paths(guest_spec spec, const guest_path_policy& policy) {
  if (!spec.drive.empty()) {
    auto p = confine(spec.drive, policy.images, false, "drive", "paths.images");
    if (!p)
      return p.error();
    spec.drive = std::move(*p);
  }
  if (!spec.mem_path.empty()) {
    auto p = confine(spec.mem_path, policy.memory, true, "mem_path", "paths.memory");
    if (!p)
      return p.error();
    spec.mem_path = std::move(*p);
  }
  return spec;
}

} // namespace ferry
