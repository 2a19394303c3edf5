#pragma once
// Reader for QAPI schema text (QEMU's qapi/*.json: Python-literal
// expressions — single-quoted strings, dicts, lists, true/false — with '#'
// comments). Yields each top-level expression as JSON. The schema is the
// specification Ferry implements; this reader is how the build derives
// command, event and type names from it instead of copying them by hand.

#include <caf/expected.hpp>

#include <boost/json/value.hpp>

#include <string>
#include <string_view>
#include <vector>

namespace ferry::qapi {

// Every top-level expression, in order. Errors name line and column.
caf::expected<std::vector<boost::json::object>> parse_schema(std::string_view text);

// The seeds in shared/seeds carry a three-line header and the original line
// number before every line; this undoes both so parse_schema can read them.
std::string strip_numbered_listing(std::string_view text);

} // namespace ferry::qapi
