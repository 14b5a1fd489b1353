// stats.cc: merges the per-thread counters and histograms of a chute-load run.

#include "tools/chute-load/stats.h"

namespace chute::load {

void Stats::Merge(const Stats& other) {
  banner_us.Merge(other.banner_us);
  tls_us.Merge(other.tls_us);
  auth_us.Merge(other.auth_us);
  data_us.Merge(other.data_us);
  message_us.Merge(other.message_us);
  connections_started += other.connections_started;
  connections_established += other.connections_established;
  banners += other.banners;
  tls_handshakes += other.tls_handshakes;
  auths += other.auths;
  sessions_ready += other.sessions_ready;
  recipients += other.recipients;
  message_bytes += other.message_bytes;
  messages.fetch_add(other.messages.load(std::memory_order_relaxed), std::memory_order_relaxed);
  in_flight.fetch_add(other.in_flight.load(std::memory_order_relaxed), std::memory_order_relaxed);
  error_count.fetch_add(other.error_count.load(std::memory_order_relaxed),
                        std::memory_order_relaxed);
  for (const auto& [key, count] : other.errors) {
    errors[key] += count;
  }
}

}  // namespace chute::load
