// metrics.cc: auth's series on /metrics, read from the AuthThrottle.

#include "auth/metrics.h"

namespace chute::auth {

using metrics::Family;
using metrics::Registry;
using metrics::Scrape;

void RegisterMetrics(Registry& registry, const AuthThrottle& throttle) {
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
}

}  // namespace chute::auth
