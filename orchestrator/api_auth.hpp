#pragma once
// Who may use the orchestrator's API. Callers present a client certificate
// over HTTPS (issued by the clients' CA, [http] client_ca: OU = operator or
// viewer, CN = the name; ferryctl --cert/--key) or a bearer token
// (`Authorization: Bearer TOKEN`, ferryctl --token-file). The tokens file the
// configuration names ([http] tokens) maps each token to a role and a name:
//
//   # ROLE      NAME    TOKEN (at least 32 characters)
//   operator    alice   6f1c...
//   viewer      grafana 9a2e...
//
// A viewer may read (GET), an operator may also change things (POST). No
// credentials or an unknown token: 401; a viewer's POST: 403 — each with
// {"error": ...}. A request that sends a token is judged by the token alone.

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

  bool empty() const { return by_token_.empty(); }

private:
  std::map<std::string, api_caller> by_token_;
};

// The caller a verified client certificate names (OU operator or viewer; a
// certificate of any other role names nobody).
std::optional<api_caller> certificate_caller(const std::string& cert_pem);

// The caller of one request: its token if it sends an Authorization header,
// else its client certificate (PEM, "" for none).
std::optional<api_caller> request_caller(const api_tokens& tokens, const std::string& authorization,
                                         const std::string& client_cert);

// The HTTP status and JSON error for `method` by `who` (nothing: allowed).
struct api_refusal {
  unsigned status;
  std::string body;
};
std::optional<api_refusal> authorize(const std::optional<api_caller>& who,
                                     const std::string& method);

} // namespace ferry
