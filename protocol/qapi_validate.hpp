#pragma once
// Strict checking of QMP arguments against the QAPI schema, with QEMU's error
// texts: unknown members ("Parameter 'x' is unexpected"), missing ones
// ("Parameter 'x' is missing"), wrong JSON types ("Invalid parameter type for
// 'x', expected: integer"), integers out of their type's range ("Parameter
// 'x' expects uint8") and unknown enum values ("Parameter 'x' does not accept
// value 'lz4'"). Nested members are named as QEMU names them:
// "capabilities[0].state".

#include "protocol/qapi_catalog.hpp"

#include <boost/json/object.hpp>
#include <boost/json/value.hpp>

#include <optional>
#include <string>

namespace ferry::qapi {

// The arguments of command expression `command` (its 'data': absent, a struct
// name, or an inline member dictionary). nullopt when they are valid.
std::optional<std::string> check_arguments(const catalog& cat, const boost::json::object& command,
                                           const boost::json::object& args);

// `value` against schema type `type` (a type name, ['T'], or an inline
// member dictionary); `name` is how the value is called in messages. Types
// the catalog does not define (they come from other schema files) accept any
// value.
std::optional<std::string> check_value(const catalog& cat, const boost::json::value& type,
                                       const boost::json::value& value, const std::string& name);

} // namespace ferry::qapi
