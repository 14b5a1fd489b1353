// preflight.cc: what the configuration refers to, checked before anything starts (also by
// chuted --check): the certificate, each delivery route's CA file, the directory database, the
// route of every accepted domain, the listeners' accounts.

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/status_macros.h"
#include "delivery/router.h"
#include "net/tls.h"
#include "server/internal.h"
#include "server/server.h"

namespace chute::server {

absl::Status CheckReferences(const Config& config, std::string* report) {
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
  delivery::Router router(config);
  for (size_t r = 0; r < router.size(); ++r) {
    const DeliveryConfig& delivery = router.route(r).settings;
    if (delivery.backend != DeliveryBackend::kMaildir && delivery.tls != DeliveryTls::kOff) {
      net::TlsClientOptions verify;
      verify.ca_file = delivery.tls_ca_file;
      absl::StatusOr<std::shared_ptr<net::TlsContext>> client = net::TlsContext::NewClient(verify);
      if (!client.ok()) {
        const std::string& name = router.route(r).name;
        std::string table = name == kDefaultRouteName
                                ? std::string("[delivery]")
                                : absl::StrCat("[[delivery.route]] \"", name, "\"");
        return absl::Status(client.status().code(),
                            absl::StrCat(table, " tls_ca_file ", client.status().message()));
      }
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
  RETURN_IF_ERROR(CheckRoutes(router, **snapshot, report));
  return CheckListenerAccounts(config, **snapshot);
}

absl::Status CheckRoutes(const delivery::Router& router, const directory::Snapshot& snapshot,
                         std::string* report) {
  std::vector<std::string> unrouted;
  absl::flat_hash_set<std::string> tenants;
  for (const directory::Tenant& tenant : snapshot.tenants()) {
    tenants.insert(tenant.name);
    for (const std::string& domain : tenant.domains) {
      std::string how = router.Describe(domain, tenant.name);
      if (how.empty()) {
        unrouted.push_back(absl::StrCat(domain, " (tenant ", tenant.name, ")"));
        continue;
      }
      if (report != nullptr) {
        int route = router.Find(domain, tenant.name);
        absl::StrAppend(report, "domain ", domain, " (tenant ", tenant.name, "): ", how, " -> ",
                        delivery::Destination(router.route(route).settings), "\n");
      }
    }
  }
  for (size_t r = 0; r < router.size() && report != nullptr; ++r) {
    for (const std::string& tenant : router.route(r).tenants) {
      if (!tenants.contains(tenant)) {
        absl::StrAppend(report, "warning: route \"", router.route(r).name, "\" names tenant ",
                        tenant, ", which is not in the directory\n");
      }
    }
  }
  if (!unrouted.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "no delivery route serves ", absl::StrJoin(unrouted, ", "),
        " (default_route = false): add it to a [[delivery.route]]'s domains or tenants; until "
        "then its recipients are refused 451 4.3.5"));
  }
  return absl::OkStatus();
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
