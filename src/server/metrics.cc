// metrics.cc: /metrics's registry: the server's own series (build, shards, tenants, log and
// the bodies in memory) and, in exposition order, each room's (spool/metrics.h,
// delivery/metrics.h, trace/metrics.h, auth/metrics.h, policy/metrics.h), which read their
// values where they live.

#include "auth/metrics.h"

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "base/log.h"
#include "base/version.h"
#include "delivery/metrics.h"
#include "fleet/metrics.h"
#include "metrics/registry.h"
#include "policy/metrics.h"
#include "server/server.h"
#include "server/shard.h"
#include "spool/metrics.h"
#include "trace/metrics.h"

namespace chute::server {

namespace {

using metrics::Family;
using metrics::Registry;
using metrics::Scrape;
using Shards = std::vector<std::unique_ptr<Shard>>;

// A per-shard counter (label shard="<index>") read straight from ShardCounters.
struct ShardCounterSeries {
  const char* name;
  const char* help;
  ShardCounter ShardCounters::*counter;
};

constexpr ShardCounterSeries kShardCounterSeries[] = {
    {"chute_connections_accepted_total", "Connections accepted.",
     &ShardCounters::connections_accepted},
    {"chute_connections_refused_total", "Connections refused before the greeting.",
     &ShardCounters::connections_refused},
    {"chute_bytes_received_total", "Bytes received.", &ShardCounters::bytes_in},
    {"chute_bytes_sent_total", "Bytes sent.", &ShardCounters::bytes_out},
    {"chute_messages_accepted_total",
     "Messages answered 250: committed to the spool (fdatasync), delivery still to come.",
     &ShardCounters::messages_accepted},
    {"chute_messages_failed_total",
     "Messages refused or failed at the end of their data: the From: check (550 5.6.241) or "
     "the spool (451 4.3.0).",
     &ShardCounters::messages_failed},
    {"chute_tls_handshakes_total", "TLS handshakes completed.", &ShardCounters::tls_handshakes},
    {"chute_tls_failures_total", "TLS handshakes failed or timed out.",
     &ShardCounters::tls_failures},
    {"chute_auth_successes_total", "Successful AUTH commands.", &ShardCounters::auth_successes},
    {"chute_auth_failures_total", "Failed AUTH commands.", &ShardCounters::auth_failures},
    {"chute_recv_starved_total",
     "Receives that found no free receive buffer (the connection waits for one).",
     &ShardCounters::recv_starved},
    {"chute_accept_pauses_total",
     "Times a listener paused accepting for want of file descriptors (EMFILE/ENFILE).",
     &ShardCounters::accept_pauses},
    {"chute_spool_full_refusals_total",
     "MAIL or the end of data refused with 452 4.3.1: the spool (with the room reserved by the "
     "messages being received) is full.",
     &ShardCounters::spool_full},
    {"chute_receiving_full_refusals_total",
     "MAIL or the end of data refused with 452 4.3.1: the bodies being received are at "
     "limits.receiving_bytes_max.",
     &ShardCounters::body_memory_full},
};

void RegisterBuildInfo(Registry& registry) {
  Family info = registry.AddGauge("chute_build_info", "The running chuted's version and revision.",
                                  {"version", "revision"});
  registry.AddCollector([info](Scrape& scrape) { scrape.Add(info, {kVersion, kRevision}, 1); });
}

// RegisterShardCounters: what each shard counts, one series per shard.
void RegisterShardCounters(Registry& registry, const Shards& shards) {
  std::vector<Family> counters;
  for (const ShardCounterSeries& series : kShardCounterSeries) {
    counters.push_back(registry.AddCounter(series.name, series.help, {"shard"}));
  }
  // A maximum, not a count: a gauge, in seconds (Prometheus base unit; promtool lints "_ms").
  Family starved_max =
      registry.AddGauge("chute_recv_starved_max_seconds",
                        "The longest a connection waited for a receive buffer.", {"shard"});
  Family busy = registry.AddCounter(
      "chute_shard_busy_seconds_total",
      "Time each shard's loop spent handling completions rather than waiting; its rate is "
      "the shard's utilisation.",
      {"shard"});
  Family open = registry.AddGauge("chute_connections_open", "Connections open now.", {"shard"});
  registry.AddCollector([&shards, counters, starved_max, busy, open](Scrape& scrape) {
    for (size_t i = 0; i < shards.size(); ++i) {
      const ShardCounters& c = shards[i]->counters();
      std::string shard = absl::StrCat(i);
      for (size_t j = 0; j < counters.size(); ++j) {
        scrape.Add(counters[j], {shard}, (c.*kShardCounterSeries[j].counter).Get());
      }
      scrape.Add(starved_max, {shard}, static_cast<double>(c.recv_starved_max_ms.Get()) / 1000);
      scrape.Add(busy, {shard}, static_cast<double>(c.busy_us.Get()) / 1e6);
      scrape.Add(open, {shard}, c.connections_open.Get());
    }
  });
}

// RegisterShardTraffic: the refusals and latencies of all shards, summed.
void RegisterShardTraffic(Registry& registry, const Shards& shards) {
  Family replies = registry.AddCounter(
      "chute_replies_total",
      "4xx and 5xx replies sent, by reply code and enhanced status code (code=\"other\": kinds "
      "past the table's bound).",
      {"code", "enhanced"});
  Family end_of_data = registry.AddHistogram(
      "chute_end_of_data_to_reply_seconds",
      "From the end of a message's data to its final reply (250 once fsynced, or 451).", {},
      metrics::LatencyBounds());
  Family commit = registry.AddHistogram(
      "chute_spool_commit_seconds",
      "One spool group commit: its writes and fdatasync (and the directory's fsync).", {},
      metrics::LatencyBounds());
  registry.AddCollector([&shards, replies, end_of_data, commit](Scrape& scrape) {
    for (const std::unique_ptr<Shard>& shard : shards) {
      shard->replies().ForEach([&](uint16_t code, absl::string_view enhanced, uint64_t count) {
        std::string text = code == 0 ? std::string("other") : absl::StrCat(code);
        scrape.Add(replies, {text, enhanced}, count);
      });
      scrape.AddLatency(end_of_data, {}, shard->counters().end_of_data_latency);
      scrape.AddLatency(commit, {}, shard->counters().spool_commit_latency);
    }
  });
}

// RegisterTenants: per tenant (a bounded label set: tenants, never accounts), sorted by name.
void RegisterTenants(Registry& registry, const UsageLog& usage) {
  Family messages = registry.AddCounter(
      "chute_tenant_messages_total",
      "Messages accepted per tenant (shards hand their counts over once a second).", {"tenant"});
  Family recipients = registry.AddCounter("chute_tenant_recipients_total",
                                          "Recipients accepted per tenant.", {"tenant"});
  registry.AddCollector([&usage, messages, recipients](Scrape& scrape) {
    absl::flat_hash_map<std::string, UsageLog::Totals> tenants = usage.TenantTotals();
    std::map<std::string, UsageLog::Totals> sorted(tenants.begin(), tenants.end());
    for (const auto& [tenant, totals] : sorted) {
      scrape.Add(messages, {tenant}, totals.messages);
      scrape.Add(recipients, {tenant}, totals.recipients);
    }
  });
}

void RegisterLog(Registry& registry) {
  Family dropped = registry.AddCounter(
      "chute_log_lines_dropped_total",
      "Log lines and journal entries dropped because the journal was not reading (chuted never "
      "waits for it).");
  registry.AddCollector([dropped](Scrape& scrape) { scrape.Add(dropped, {}, LogLinesDropped()); });
}

}  // namespace

void Server::RegisterMetrics() {
  metrics_ = std::make_unique<metrics::Registry>();
  Registry& registry = *metrics_;
  RegisterBuildInfo(registry);
  RegisterShardCounters(registry, shards_);
  spool::RegisterMetrics(registry, *gauges_);
  delivery::RegisterMetrics(registry, *delivery_);
  RegisterShardTraffic(registry, shards_);
  RegisterTenants(registry, shared_.usage);
  RegisterLog(registry);
  trace::RegisterMetrics(registry, trace_.get());
  auth::RegisterMetrics(registry, *shared_.throttle, *keys_);
  policy::RegisterMetrics(registry, *shared_.gate, shared_.snapshot);
  if (leases_ != nullptr) {
    fleet::RegisterMetrics(registry, *leases_);
  }
  Family receiving = registry.AddGauge(
      "chute_receiving_bytes",
      "Message body bytes held in memory by the messages being received (receiving_bytes_max).");
  registry.AddCollector([this, receiving](Scrape& scrape) {
    scrape.Add(receiving, {}, shared_.receiving_bytes.load());
  });
}

std::string Server::MetricsText() const {
  return metrics_ == nullptr ? std::string() : metrics_->Text();
}

}  // namespace chute::server
