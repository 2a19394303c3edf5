#pragma once
// Who a control-plane peer is, beyond "a certificate our CA issued".
//
// CAF 0.17's openssl module verifies a peer only against the CA file and
// gives no access to the peer's certificate, so the TLS handshake cannot say
// which host answered a dial. Ferry checks that itself right after the link
// is up: the dialer sends a fresh random challenge, the peer answers with its
// certificate and a signature of the challenge made with its private key, and
// the dialer verifies that the certificate chains to the CA it trusts for that
// role, names the expected role and name, and made the signature. A peer that
// only holds another host's certificate (not its key) cannot answer.
//
// Identities live in the certificate subject: OU = role (orchestrator, host,
// operator, viewer), CN = name (docs/security.md, deploy/pki/ferry-pki.sh).

#include "actors/tls_identity.hpp"

#include <caf/expected.hpp>

#include <string>

namespace ferry::identity {

struct peer {
  std::string role;
  std::string name;
};

struct proof {
  std::string cert_pem;  // the prover's certificate
  std::string signature; // hex, over the challenge
};

// 32 random bytes as hex.
std::string new_challenge();

// Signs `challenge` with `id`'s key and attaches its certificate.
caf::expected<proof> prove(const tls_identity& id, const std::string& challenge);

// The identity `p` proves for `challenge`, if its certificate chains to the
// CA(s) in `ca_file` and made the signature; else why not.
caf::expected<peer> check(const std::string& ca_file, const proof& p, const std::string& challenge);

// The subject of the certificate ferry-pki.sh issues for (role, name), as
// OpenSSL prints it in RFC 2253 order — what tls-authz compares against.
std::string subject_dn(const std::string& role, const std::string& name);

// The role and name a PEM certificate's subject carries (no verification).
caf::expected<peer> subject_of(const std::string& cert_pem);

// A daemon's own files, checked before it starts: the CA file loads, the
// certificate and key load and belong together, and the certificate names
// `role`; the name it carries, or why the daemon must not start.
caf::expected<std::string> own_identity(const tls_identity& id, const std::string& role);

} // namespace ferry::identity
