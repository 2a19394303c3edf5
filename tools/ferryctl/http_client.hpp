#pragma once
// ferryctl's side of the orchestrator API: one blocking HTTP/1.1 request.

#include "actors/host_port.hpp"

#include <string>

namespace ferry::ctl {

struct http_result {
  int status = 0; // 0: no answer (the message says why)
  std::string body;
};

// `authorization`: the Authorization header's value ("" = none).
http_result http_request(const host_port& server, const std::string& method,
                         const std::string& target, const std::string& body = {},
                         const std::string& authorization = {});

} // namespace ferry::ctl
