#pragma once
// What the host actor lets a control-plane peer do to a guest over QMP: only
// the commands the orchestrator needs to migrate guests and judge them, with
// their arguments checked. Anything that names a host path or runs a program
// (migrate to exec:/file:/unix:, pmemsave, dump-guest-memory, object-add,
// human-monitor-command, ...) is refused, so a stolen control-plane identity
// cannot turn an agent into a shell or a file writer.

#include <optional>
#include <string>
#include <string_view>

namespace ferry {

// Why `command` with JSON arguments `args` ("" = none) is not relayed, or
// nothing when it may pass.
std::optional<std::string> relay_refusal(std::string_view command, const std::string& args);

// The QMP error reply the refusal is answered with (class GenericError).
std::string relay_refusal_reply(const std::string& why);

} // namespace ferry
