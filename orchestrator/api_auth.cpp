#include "orchestrator/api_auth.hpp"

#include "actors/identity_proof.hpp"
#include "common/error.hpp"
#include "orchestrator/api_request.hpp"

#include <openssl/crypto.h>

#include <sys/stat.h>

#include <fstream>
#include <sstream>

namespace ferry {

namespace {

constexpr size_t min_token_length = 32;

caf::error invalid(const std::string& msg) {
  return make_ferry_error(errc::invalid_argument, msg);
}

} // namespace

caf::expected<api_tokens> api_tokens::load(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0)
    return invalid("http.tokens: cannot read '" + path + "'");
  if ((st.st_mode & 077) != 0)
    return invalid("http.tokens: '" + path +
                   "' may be read by others (its tokens are passwords): chmod 600 it");
  std::ifstream in{path};
  std::stringstream ss;
  ss << in.rdbuf();
  if (!in)
    return invalid("http.tokens: cannot read '" + path + "'");
  return parse(ss.str(), path);
}

caf::expected<api_tokens> api_tokens::parse(const std::string& text, const std::string& origin) {
  api_tokens out;
  std::istringstream lines{text};
  std::string line;
  for (int n = 1; std::getline(lines, line); ++n) {
    if (const auto hash = line.find('#'); hash != std::string::npos)
      line.erase(hash);
    std::istringstream fields{line};
    std::string role, name, token, extra;
    if (!(fields >> role))
      continue; // blank or comment
    const std::string where = origin + ":" + std::to_string(n) + ": ";
    if (!(fields >> name >> token) || (fields >> extra))
      return invalid(where + "expected ROLE NAME TOKEN");
    api_caller c;
    if (role == "operator")
      c.role = api_role::operator_;
    else if (role != "viewer")
      return invalid(where + "role '" + role + "' is neither operator nor viewer");
    c.name = name;
    if (token.size() < min_token_length)
      return invalid(where + "token shorter than " + std::to_string(min_token_length) +
                     " characters");
    if (!out.by_token_.emplace(token, c).second)
      return invalid(where + "token given twice");
  }
  if (out.by_token_.empty())
    return invalid(origin + ": no tokens: nobody could use the API");
  return out;
}

std::optional<api_caller> api_tokens::caller(const std::string& authorization) const {
  constexpr std::string_view scheme = "Bearer ";
  if (authorization.size() <= scheme.size() || authorization.compare(0, scheme.size(), scheme) != 0)
    return std::nullopt;
  const std::string token = authorization.substr(scheme.size());
  // Every entry is compared, in constant time: the time taken does not say
  // how much of a guess was right.
  std::optional<api_caller> found;
  for (const auto& [t, c] : by_token_)
    if (t.size() == token.size() && CRYPTO_memcmp(t.data(), token.data(), t.size()) == 0)
      found = c;
  return found;
}

std::optional<api_caller> certificate_caller(const std::string& cert_pem) {
  if (cert_pem.empty())
    return std::nullopt;
  auto subject = identity::subject_of(cert_pem);
  if (!subject || subject->name.empty())
    return std::nullopt;
  if (subject->role == "operator")
    return api_caller{api_role::operator_, subject->name};
  if (subject->role == "viewer")
    return api_caller{api_role::viewer, subject->name};
  return std::nullopt;
}

std::optional<api_caller> request_caller(const api_tokens& tokens, const std::string& authorization,
                                         const std::string& client_cert) {
  if (!authorization.empty())
    return tokens.caller(authorization);
  return certificate_caller(client_cert);
}

std::optional<api_refusal> authorize(const std::optional<api_caller>& who,
                                     const std::string& method) {
  if (!who)
    return api_refusal{401, api::error_body("authentication required: an operator's or viewer's "
                                            "client certificate (ferryctl --cert/--key) or "
                                            "Authorization: Bearer TOKEN (ferryctl --token-file)")};
  if (method != "GET" && who->role != api_role::operator_)
    return api_refusal{403, api::error_body(who->name + " is a viewer: changing the cluster needs "
                                                        "an operator's token or certificate")};
  return std::nullopt;
}

} // namespace ferry
