#pragma once
// The daemons' one logging path: spdlog to stderr (journald takes it from
// there under systemd), each line "PROGRAM LEVEL: text". Command-line
// errors that end a process stay plain stderr text; this is for what a
// running daemon has to say. FERRY_LOG=debug|info|warn|error sets the level.

#include <spdlog/spdlog.h>

#include <string>

namespace ferry::log {

// Names the program in every line; call once at start (before that, lines
// go out under "ferry").
void init(const std::string& program);

template <class... Args>
void info(spdlog::format_string_t<Args...> fmt, Args&&... args) {
  spdlog::info(fmt, std::forward<Args>(args)...);
}

template <class... Args>
void warn(spdlog::format_string_t<Args...> fmt, Args&&... args) {
  spdlog::warn(fmt, std::forward<Args>(args)...);
}

template <class... Args>
void error(spdlog::format_string_t<Args...> fmt, Args&&... args) {
  spdlog::error(fmt, std::forward<Args>(args)...);
}

} // namespace ferry::log
