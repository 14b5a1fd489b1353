#pragma once

// Router: which delivery route serves a recipient (docs/architecture.md, Delivery routes).
//
// The routes are the configuration's [[delivery.route]] tables in file order, then [delivery]
// itself as the route named "default" when default_route is true. A recipient's route is the
// one that names its domain, else the one that names its tenant, else the default route, else
// none (its RCPT is refused 451 4.3.5). Immutable once built; any thread.

#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"
#include "base/config.h"

namespace chute::delivery {

inline constexpr int kNoRoute = -1;

struct Route {
  std::string name;
  DeliveryConfig settings;
  std::vector<std::string> domains;  // as configured (a default route: none)
  std::vector<std::string> tenants;
};

class Router {
 public:
  explicit Router(const Config& config);

  // Find: the index of the route of a recipient in `domain` (any case) whose message comes
  // from tenant `tenant_name`; kNoRoute when no route serves it.
  int Find(absl::string_view domain, absl::string_view tenant_name) const;
  // FindAddress: Find for the domain of `address` ("local@domain").
  int FindAddress(absl::string_view address, absl::string_view tenant_name) const;

  size_t size() const { return routes_.size(); }
  const Route& route(size_t index) const { return routes_[index]; }
  // Describe: why a domain goes where it goes, for --check-config: "route \"staff\" (domain)",
  // "route \"svc\" (tenant contoso)", "route \"default\"", or "" when none serves it.
  std::string Describe(absl::string_view domain, absl::string_view tenant_name) const;

 private:
  std::vector<Route> routes_;
  absl::flat_hash_map<std::string, int> by_domain_;
  absl::flat_hash_map<std::string, int> by_tenant_;
  int default_ = kNoRoute;
};

// Destination: what a route delivers to, as logs and metrics name it:
// "maildir:/var/lib/chute/mail", "lmtp:127.0.0.1:24", "smtp:10.0.0.5:25,10.0.0.6:25".
std::string Destination(const DeliveryConfig& settings);

}  // namespace chute::delivery
