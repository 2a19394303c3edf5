#include "tools/qmp/qmp_client.hpp"

#include "common/error.hpp"

#include <stdexcept>

namespace ferry::qmp_tool {

namespace json = boost::json;

namespace {

template <class T>
T value_or_throw(caf::expected<T> r) {
  if (!r)
    throw std::runtime_error(describe(r.error()));
  return std::move(*r);
}

} // namespace

qmp_client::qmp_client(const std::string& path, std::chrono::milliseconds timeout)
  : conn_(value_or_throw(qmp_connection::connect(path, timeout))) {}

json::value qmp_client::send_raw(const std::string& text) {
  return value_or_throw(conn_.send_raw(text));
}

json::value qmp_client::next_reply() {
  return value_or_throw(conn_.next_reply());
}

json::value qmp_client::execute(const std::string& command, json::object arguments) {
  return value_or_throw(conn_.execute(command, std::move(arguments)));
}

void qmp_client::negotiate() {
  if (auto ok = conn_.negotiate(); !ok)
    throw std::runtime_error(describe(ok.error()));
}

} // namespace ferry::qmp_tool
