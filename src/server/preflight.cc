// preflight.cc: what the configuration refers to, checked before anything starts (also by
// chuted --check): the certificate, delivery's CA file, the directory database, the listeners'
// accounts.

#include "absl/strings/str_cat.h"
#include "net/tls.h"
#include "server/internal.h"
#include "server/server.h"

namespace chute::server {

absl::Status CheckReferences(const Config& config) {
  for (const ListenerConfig& listener : config.listeners) {
    if (listener.tls != TlsMode::kNone) {
      absl::StatusOr<std::shared_ptr<net::TlsContext>> tls =
          net::TlsContext::Load(config.tls.certificate, config.tls.private_key);
      if (!tls.ok()) {
        return tls.status();
      }
      break;
    }
  }
  const DeliveryConfig& delivery = config.delivery;
  if (delivery.backend != DeliveryBackend::kMaildir && delivery.tls != DeliveryTls::kOff) {
    net::TlsClientOptions verify;
    verify.ca_file = delivery.tls_ca_file;
    absl::StatusOr<std::shared_ptr<net::TlsContext>> client = net::TlsContext::NewClient(verify);
    if (!client.ok()) {
      return absl::Status(client.status().code(),
                          absl::StrCat("[delivery] tls_ca_file ", client.status().message()));
    }
  }
  absl::StatusOr<std::unique_ptr<directory::Store>> store =
      directory::Store::Open(config.directory.database, false);
  if (!store.ok()) {
    return absl::NotFoundError(absl::StrCat(
        config.directory.database,
        " cannot be opened (create it with chutectl tenant add): ", store.status().message()));
  }
  absl::StatusOr<std::shared_ptr<const directory::Snapshot>> snapshot = (*store)->LoadSnapshot();
  if (!snapshot.ok()) {
    return snapshot.status();
  }
  return CheckListenerAccounts(config, **snapshot);
}

absl::Status CheckListenerAccounts(const Config& config, const directory::Snapshot& snapshot) {
  for (const ListenerConfig& listener : config.listeners) {
    if (!listener.authenticate_as.empty() &&
        snapshot.FindAccount(listener.authenticate_as) == nullptr) {
      return absl::FailedPreconditionError(
          absl::StrCat("listener ", listener.address, ": authenticate_as ",
                       listener.authenticate_as, " is not an account in the directory (",
                       config.directory.database, "); create it with chutectl account new"));
    }
  }
  return absl::OkStatus();
}

}  // namespace chute::server
