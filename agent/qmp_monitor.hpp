#pragma once
// The QMP commands of one guest: what each does, its argument checks and the
// events it raises. Transport-free — qmp_server feeds it parsed requests — so
// tests can call it directly. Implemented: query-status, stop, cont, quit,
// pmemsave and the identity queries; the migration schema's commands are
// listed and answer what they still lack.

#include "agent/guest.hpp"
#include "protocol/qmp_wire.hpp"

#include <boost/json/object.hpp>
#include <boost/json/value.hpp>

#include <functional>
#include <optional>
#include <string>
#include <variant>

namespace ferry {

struct qmp_failure {
  qmp::error_class cls = qmp::error_class::generic_error;
  std::string desc;
};

using qmp_result = std::variant<boost::json::value, qmp_failure>;

struct vm_identity {
  std::string name;
  std::string uuid;
};

class qmp_monitor {
public:
  // `emit` sends an event line to every client; `on_quit` asks the process to
  // exit once the reply is out.
  qmp_monitor(guest& g, vm_identity id, std::function<void(std::string)> emit,
              std::function<void()> on_quit);

  qmp_result execute(const std::string& command, const boost::json::object& args);
  // Every command of query-commands: Ferry's own and every command of the
  // migration schema; the schema commands not implemented yet answer a
  // GenericError naming what is missing.
  static const std::vector<std::string>& commands();
  // The commands that do their job today.
  static const std::vector<std::string>& implemented_commands();

private:
  guest& guest_;
  vm_identity id_;
  std::function<void(std::string)> emit_;
  std::function<void()> on_quit_;
  guest::pause_guard stopped_; // held while the guest is stopped by `stop`
};

} // namespace ferry
