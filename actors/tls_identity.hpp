#pragma once
// A control-plane node's TLS identity: PEM files of the cluster CA (peers
// must present a certificate it issued) and of this node's certificate and key.

#include <string>

namespace ferry {

struct tls_identity {
  std::string ca_file;
  std::string cert_file;
  std::string key_file;
};

} // namespace ferry
