#pragma once
// ferryctl's side of the orchestrator API: one blocking HTTP/1.1 request,
// over HTTPS when TLS settings are given.

#include "actors/host_port.hpp"

#include <optional>
#include <string>

namespace ferry::ctl {

struct http_result {
  int status = 0; // 0: no answer (the message says why)
  std::string body;
};

struct client_tls {
  std::string ca{};   // the CA that issued the server's certificate (orchestrator-ca.pem)
  std::string cert{}; // this client's certificate and key ("": none, a token may do)
  std::string key{};
  // The name the server's certificate must carry (ferry-pki.sh issues the
  // orchestrator's for "orchestrator", whatever address it listens on).
  std::string server_name = "orchestrator";
};

// `authorization`: the Authorization header's value ("" = none).
http_result http_request(const host_port& server, const std::string& method,
                         const std::string& target, const std::string& body = {},
                         const std::string& authorization = {},
                         const std::optional<client_tls>& tls = {});

} // namespace ferry::ctl
