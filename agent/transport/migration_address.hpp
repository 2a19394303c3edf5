#pragma once
// Where a migration stream goes or comes from: the `uri` strings of QEMU's
// migrate / migrate-incoming / -incoming (tcp:, unix:, exec:, file:) and the
// equivalent MigrationChannel objects of the `channels` argument.

#include <boost/json/array.hpp>
#include <boost/json/value.hpp>

#include <cstdint>
#include <string>
#include <variant>
#include <vector>

namespace ferry {

struct migration_address {
  enum class kind { tcp, unix_socket, exec, file };
  kind type = kind::tcp;
  std::string host;              // tcp
  uint16_t port = 0;             // tcp; 0 on the listening side = any free port
  std::string path;              // unix, file
  uint64_t offset = 0;           // file
  std::vector<std::string> argv; // exec (`exec:CMD` runs /bin/sh -c CMD)

  // Sockets carry replies back (the return path); pipes and files do not.
  bool bidirectional() const { return type == kind::tcp || type == kind::unix_socket; }
  // The address as a uri again, for messages.
  std::string describe() const;
};

// A QMP error text, or the address.
using address_or_error = std::variant<migration_address, std::string>;

address_or_error parse_migration_uri(const std::string& uri);
// `uri` and `channels` as migrate / migrate-incoming take them (either, not
// both; one "main" channel).
address_or_error parse_migration_target(const boost::json::value* uri,
                                        const boost::json::value* channels);

// QMP's SocketAddress for a bound listener (query-migrate socket-address).
boost::json::value socket_address_json(const migration_address& a);

} // namespace ferry
