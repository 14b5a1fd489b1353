// metrics.cc: the fleet's series on /metrics, read from TenantLeases' counters.

#include "fleet/metrics.h"

namespace chute::fleet {

using metrics::Family;
using metrics::Registry;
using metrics::Scrape;

void RegisterMetrics(Registry& registry, const TenantLeases& leases) {
  Family up = registry.AddGauge("chute_fleet_redis_up",
                                "1 while Redis answers; 0 while this node is on its share.");
  Family nodes = registry.AddGauge("chute_fleet_nodes_alive",
                                   "Nodes alive in Redis as last seen (this one counted).");
  Family share = registry.AddGauge("chute_fleet_tenant_share",
                                   "Authenticated sessions per tenant this node allows on its own "
                                   "while Redis is away (the cap over the nodes alive).");
  Family held = registry.AddGauge("chute_fleet_leases", "Leases this node holds in Redis.");
  Family answers = registry.AddCounter(
      "chute_fleet_lease_answers_total",
      "Tenant places asked for, by answer and by who decided (redis, or share).",
      {"decided_by", "answer"});
  Family failures = registry.AddCounter("chute_fleet_redis_failures_total",
                                        "Connections to Redis and exchanges with it that failed.");
  Family put_back = registry.AddCounter(
      "chute_fleet_leases_put_back_total",
      "Live sessions' leases Redis had lost (a restart, a flush) and a renewal put back.");
  registry.AddCollector(
      [&leases, up, nodes, share, held, answers, failures, put_back](Scrape& scrape) {
        const LeaseCounters& c = leases.counters();
        scrape.Add(up, {}, c.redis_up.load() ? 1 : 0);
        scrape.Add(nodes, {}, c.nodes_alive.load());
        scrape.Add(share, {}, leases.Share());
        scrape.Add(held, {}, c.leases.load());
        scrape.Add(answers, {"redis", "admitted"}, c.admitted.load());
        scrape.Add(answers, {"redis", "refused"}, c.refused.load());
        scrape.Add(answers, {"share", "admitted"}, c.fallback_admitted.load());
        scrape.Add(answers, {"share", "refused"}, c.fallback_refused.load());
        scrape.Add(failures, {}, c.redis_failures.load());
        scrape.Add(put_back, {}, c.put_back.load());
      });
}

}  // namespace chute::fleet
