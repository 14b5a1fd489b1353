// metrics.cc: the caps' series on /metrics, read from the ConnectionGate.

#include "policy/metrics.h"

#include <optional>
#include <string>

#include "absl/strings/str_cat.h"
#include "base/net_address.h"

namespace chute::policy {

using metrics::Family;
using metrics::Registry;
using metrics::Scrape;

void RegisterMetrics(Registry& registry, const ConnectionGate& gate,
                     const std::atomic<std::shared_ptr<const directory::Snapshot>>& snapshot) {
  Family refused = registry.AddCounter("chute_gate_refused_total",
                                       "Connections or AUTHs refused by a cap.", {"reason"});
  Family ips = registry.AddGauge("chute_gate_ip_connections",
                                 "Connections counted per client address.", {"ip"});
  Family tenants = registry.AddGauge("chute_gate_tenant_connections",
                                     "Authenticated sessions per tenant.", {"tenant"});
  registry.AddCollector([&gate, &snapshot, refused, ips, tenants](Scrape& scrape) {
    scrape.Add(refused, {"ip_cap"}, gate.refused_ip_cap.load());
    scrape.Add(refused, {"tenant_cap"}, gate.refused_tenant_cap.load());
    scrape.Add(refused, {"table_full"}, gate.refused_table_full.load());
    scrape.Add(refused, {"connections_max"}, gate.refused_connections_max.load());
    gate.ips().ForEach([&](uint64_t key, uint64_t count) {
      std::optional<IpBytes> ip = ConnectionGate::KeyToIp(key);
      scrape.Add(ips, {ip.has_value() ? FormatIp(*ip) : absl::StrCat("ipv6-", key)}, count);
    });
    std::shared_ptr<const directory::Snapshot> directory = snapshot.load();
    for (const directory::Tenant& tenant : directory->tenants()) {
      scrape.Add(tenants, {tenant.name}, gate.TenantCount(tenant.id));
    }
  });
}

}  // namespace chute::policy
