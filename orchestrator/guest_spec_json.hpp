#pragma once
// The guest spec an API client sends (POST /api/v1/guests "spec"): untrusted
// JSON to a guest_spec. Every member is optional except what the agent's own
// checks demand later; unknown members and wrong types are errors naming the
// member. Fuzzed (tests/fuzz/fuzz_api_json.cpp).

#include "actors/guest_spec.hpp"

#include <caf/expected.hpp>

#include <string>

namespace ferry {

caf::expected<guest_spec> guest_spec_from_json(const std::string& text);

} // namespace ferry
