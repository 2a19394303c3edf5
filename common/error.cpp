#include "common/error.hpp"

#include <caf/message.hpp>

#include <cerrno>
#include <cstring>

namespace ferry {

caf::error make_ferry_error(errc code, std::string desc) {
  return caf::make_error(code, std::move(desc));
}

caf::error make_system_error(const std::string& what) {
  const int saved = errno;
  return make_ferry_error(errc::system_error, what + ": " + std::strerror(saved));
}

std::string describe(const caf::error& err) {
  const auto& ctx = err.context();
  if (ctx.size() == 1 && ctx.match_element<std::string>(0))
    return ctx.get_as<std::string>(0);
  return caf::to_string(err);
}

} // namespace ferry
