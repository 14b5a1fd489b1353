// metrics.cc: auth's series on /metrics, read from the AuthThrottle.

#include "auth/metrics.h"

namespace chute::auth {

using metrics::Family;
using metrics::Registry;
using metrics::Scrape;

void RegisterMetrics(Registry& registry, const AuthThrottle& throttle, const KeyStore& keys) {
  Family throttled = registry.AddCounter("chute_auth_throttled_total",
                                         "AUTHs refused by the failure throttle.", {"reason"});
  Family delayed =
      registry.AddCounter("chute_auth_delayed_total", "Failed AUTHs whose 535 was held back.");
  registry.AddCollector([&throttle, throttled, delayed](Scrape& scrape) {
    scrape.Add(throttled, {"ip"}, throttle.refused_ip.load());
    scrape.Add(throttled, {"account"}, throttle.refused_account.load());
    scrape.Add(throttled, {"spray"}, throttle.refused_spray.load());
    scrape.Add(delayed, {}, throttle.delayed.load());
  });
  Family fetches = registry.AddCounter(
      "chute_oauth_key_fetches_total",
      "Fetches of tenants' OAuth signing keys from their identity provider, by result.",
      {"result"});
  Family file_failures = registry.AddCounter(
      "chute_oauth_key_file_failures_total",
      "Times a tenant's JWKS file was found changed and did not load (the old keys stayed).");
  Family tenants = registry.AddGauge(
      "chute_oauth_tenants",
      "Tenants with an OAuth key source, by whether keys are in force (without: XOAUTH2 fails).",
      {"keys"});
  registry.AddCollector([&keys, fetches, file_failures, tenants](Scrape& scrape) {
    scrape.Add(fetches, {"ok"}, keys.fetches_ok.load());
    scrape.Add(fetches, {"failed"}, keys.fetches_failed.load());
    scrape.Add(file_failures, {}, keys.file_loads_failed.load());
    scrape.Add(tenants, {"loaded"}, keys.tenants_with_keys.load());
    scrape.Add(tenants, {"none"}, keys.tenants_without_keys.load());
  });
}

}  // namespace chute::auth
