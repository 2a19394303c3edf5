#include "common/log.hpp"

#include <spdlog/sinks/stdout_sinks.h>

#include <cstdlib>
#include <memory>

namespace ferry::log {

void init(const std::string& program) {
  auto logger =
    std::make_shared<spdlog::logger>(program, std::make_shared<spdlog::sinks::stderr_sink_mt>());
  // Time with milliseconds: migrations are told apart in fractions of seconds.
  logger->set_pattern("%n %Y-%m-%dT%H:%M:%S.%e %l: %v");
  logger->set_level(spdlog::level::info);
  if (const char* level = std::getenv("FERRY_LOG"))
    logger->set_level(spdlog::level::from_str(level));
  logger->flush_on(spdlog::level::info);
  spdlog::set_default_logger(std::move(logger));
}

} // namespace ferry::log
