#pragma once
// Reading Ferry's TOML configuration files (agent.toml, orchestrator.toml).
// Every mistake comes back as an error value naming the file and the key (or
// file:line:column for a syntax error); toml++ stays behind this interface.

#include "actors/host_port.hpp"
#include "actors/tls_identity.hpp"

#include <caf/error.hpp>
#include <caf/expected.hpp>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace ferry {

class config_reader {
public:
  // How the caller's module turns a message into its own error category.
  using error_fn = caf::error (*)(const std::string&);

  static caf::expected<config_reader> parse(const std::string& text, const std::string& origin,
                                            error_fn make_error);
  static caf::expected<config_reader> load(const std::string& path, error_fn make_error);

  // Keys are dotted paths ("control.listen"). The single-argument forms
  // require the key; the others return the fallback when it is absent.
  caf::expected<std::string> str(std::string_view key) const;
  caf::expected<std::string> str(std::string_view key, const std::string& fallback) const;
  caf::expected<int64_t> integer(std::string_view key, int64_t fallback) const;
  caf::expected<uint64_t> count(std::string_view key, uint64_t fallback) const; // >= 0
  caf::expected<bool> boolean(std::string_view key, bool fallback) const;
  caf::expected<host_port> address(std::string_view key) const; // "HOST:PORT"
  caf::expected<tls_identity> tls() const;                      // [tls] ca, cert, key
  caf::expected<std::vector<std::string>> strings(std::string_view key,
                                                  const std::vector<std::string>& fallback) const;

  // The entries of an array of tables (`[[key]]`), each a reader of its own
  // whose errors name "key.member". Absent: an empty list.
  caf::expected<std::vector<config_reader>> tables(std::string_view key) const;

  // "ORIGIN: what", in the caller's error category.
  caf::error invalid(const std::string& what) const;

  struct view; // the parsed document and the table this reader looks at

private:
  config_reader(std::shared_ptr<const view> v, std::string origin, std::string prefix,
                error_fn make_error);
  std::string name(std::string_view key) const;

  std::shared_ptr<const view> view_;
  std::string origin_;
  std::string prefix_; // "agents." for the entries of [[agents]]
  error_fn invalid_;
};

} // namespace ferry
