#include "agent/daemon/migration_credentials.hpp"

#include "actors/identity_proof.hpp"
#include "common/error.hpp"

#include <filesystem>
#include <utility>

namespace ferry {

caf::expected<std::string> prepare_migration_credentials(const daemon_config& cfg) {
  namespace fs = std::filesystem;
  // The files must be what a migration peer expects: the hosts' CA loads and
  // this host's certificate names it and matches its key.
  auto me = identity::own_identity({cfg.migration_ca, cfg.tls.cert_file, cfg.tls.key_file}, "host");
  if (!me)
    return make_ferry_error(errc::invalid_argument,
                            "migration credentials: " + describe(me.error()) +
                              " (migration.ca is the CA of the other hosts' certificates)");
  const fs::path dir = fs::path{cfg.state_dir} / "migration-tls";
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec)
    return make_ferry_error(errc::system_error,
                            "cannot create " + dir.string() + ": " + ec.message());
  const std::pair<const char*, const std::string*> links[] = {
    {"ca-cert.pem", &cfg.migration_ca},    {"server-cert.pem", &cfg.tls.cert_file},
    {"server-key.pem", &cfg.tls.key_file}, {"client-cert.pem", &cfg.tls.cert_file},
    {"client-key.pem", &cfg.tls.key_file},
  };
  for (const auto& [name, target] : links) {
    const fs::path link = dir / name;
    fs::remove(link, ec);
    fs::create_symlink(fs::absolute(*target, ec), link, ec);
    if (ec)
      return make_ferry_error(errc::system_error,
                              "cannot link " + link.string() + ": " + ec.message());
  }
  return dir.string();
}

} // namespace ferry
