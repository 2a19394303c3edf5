#pragma once
// The "-> request / <- reply" examples in a QAPI schema's documentation,
// as JSON. Event examples ("<-" with no request before it) are kept with an
// empty request.

#include <boost/json/array.hpp>

#include <string_view>

namespace ferry::qapi {

// [{"request": {...} or null, "reply": {...}}...] in schema order. Example
// text that is not valid JSON is skipped.
boost::json::array extract_examples(std::string_view schema_text);

} // namespace ferry::qapi
