#pragma once
// Who may use the orchestrator's API. Callers present a bearer token
// (`Authorization: Bearer TOKEN`, ferryctl --token-file); the tokens file the
// configuration names ([http] tokens) maps each token to a role and a name:
//
//   # ROLE      NAME    TOKEN (at least 32 characters)
//   operator    alice   6f1c...
//   viewer      grafana 9a2e...
//
// A viewer may read (GET), an operator may also change things (POST). No or
// an unknown token: 401; a viewer's POST: 403 — each with {"error": ...}.

#include <caf/expected.hpp>

#include <map>
#include <optional>
#include <string>

namespace ferry {

enum class api_role { viewer, operator_ };

struct api_caller {
  api_role role = api_role::viewer;
  std::string name;
};

class api_tokens {
public:
  // Reads the tokens file; refuses one others can read (its tokens are
  // passwords), malformed lines (named by number) and short tokens.
  static caf::expected<api_tokens> load(const std::string& path);
  static caf::expected<api_tokens> parse(const std::string& text, const std::string& origin);

  // The caller an Authorization header value names, if any (constant-time
  // comparison of the token).
  std::optional<api_caller> caller(const std::string& authorization) const;

private:
  std::map<std::string, api_caller> by_token_;
};

// The HTTP status and JSON error for `method` by `who` (nothing: allowed).
struct api_refusal {
  unsigned status;
  std::string body;
};
std::optional<api_refusal> authorize(const std::optional<api_caller>& who,
                                     const std::string& method);

} // namespace ferry
