#pragma once
// Argument helpers shared by the monitor's handler files (qmp_monitor,
// qmp_migration_commands, qmp_dirty_commands); internal to agent/qmp/.

#include "agent/qmp/qmp_monitor.hpp"

#include <boost/json.hpp>

#include <initializer_list>
#include <optional>
#include <string>
#include <utility>

namespace ferry::qmp_args {

inline qmp_failure generic(std::string desc) {
  return {qmp::error_class::generic_error, std::move(desc)};
}

// QEMU's argument rules for the commands outside the 9.1 schema (pmemsave,
// the legacy ones): no unknown members, required members present, each of
// its JSON type (int64 = integer, double_ = any number, string).
std::optional<qmp_failure>
check_args(const boost::json::object& args,
           std::initializer_list<std::pair<const char*, boost::json::kind>> spec);

std::optional<uint64_t> as_u64(const boost::json::value& v);

inline boost::json::value empty() {
  return boost::json::value(boost::json::object{});
}

} // namespace ferry::qmp_args
