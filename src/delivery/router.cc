// router.cc: maps a recipient's domain (or its tenant) to its delivery route.

#include "delivery/router.h"

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace chute::delivery {

Router::Router(const Config& config) {
  for (const RouteConfig& r : config.routes) {
    int index = static_cast<int>(routes_.size());
    routes_.push_back(Route{r.name, r.delivery, r.domains, r.tenants});
    for (const std::string& domain : r.domains) {
      by_domain_.try_emplace(absl::AsciiStrToLower(domain), index);
    }
    for (const std::string& tenant : r.tenants) {
      by_tenant_.try_emplace(tenant, index);
    }
  }
  if (config.default_route) {
    default_ = static_cast<int>(routes_.size());
    routes_.push_back(Route{std::string(kDefaultRouteName), config.delivery, {}, {}});
  }
}

int Router::Find(absl::string_view domain, absl::string_view tenant_name) const {
  if (!by_domain_.empty()) {
    bool lower = std::none_of(domain.begin(), domain.end(), absl::ascii_isupper);
    auto it = lower ? by_domain_.find(domain) : by_domain_.find(absl::AsciiStrToLower(domain));
    if (it != by_domain_.end()) {
      return it->second;
    }
  }
  if (!by_tenant_.empty()) {
    auto it = by_tenant_.find(tenant_name);
    if (it != by_tenant_.end()) {
      return it->second;
    }
  }
  return default_;
}

int Router::FindAddress(absl::string_view address, absl::string_view tenant_name) const {
  size_t at = address.rfind('@');
  return Find(at == absl::string_view::npos ? absl::string_view() : address.substr(at + 1),
              tenant_name);
}

std::string Router::Describe(absl::string_view domain, absl::string_view tenant_name) const {
  int index = Find(domain, tenant_name);
  if (index == kNoRoute) {
    return "";
  }
  std::string name = absl::StrCat("route \"", routes_[index].name, "\"");
  if (by_domain_.contains(absl::AsciiStrToLower(domain))) {
    return absl::StrCat(name, " (by domain)");
  }
  if (index != default_) {
    return absl::StrCat(name, " (by tenant ", tenant_name, ")");
  }
  return name;
}

std::string Destination(const DeliveryConfig& settings) {
  if (settings.backend == DeliveryBackend::kMaildir) {
    return absl::StrCat("maildir:", settings.maildir_root);
  }
  return absl::StrCat(DeliveryBackendName(settings.backend), ":",
                      absl::StrJoin(settings.targets, ","));
}

}  // namespace chute::delivery
