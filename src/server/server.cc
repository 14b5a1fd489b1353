// server.cc: chuted's lifecycle: starts its parts in order, stops them, says whether one failed.

#include "server/server.h"

#include "admin/admin_server.h"
#include "auth/key_store.h"
#include "auth/throttle.h"
#include "auth/verifier.h"
#include "base/log.h"
#include "base/status_macros.h"
#include "delivery/queue.h"
#include "delivery/report.h"
#include "delivery/stage.h"
#include "fleet/tenant_leases.h"
#include "io/file.h"
#include "metrics/registry.h"
#include "net/tls.h"
#include "policy/connection_gate.h"
#include "server/internal.h"
#include "server/shard.h"
#include "spool/spool.h"
#include "trace/trace.h"

namespace chute::server {

namespace {

// How long a stopping chuted keeps delivering what is ready (the spool keeps the rest).
constexpr absl::Duration kDeliveryDrain = absl::Seconds(10);

}  // namespace

Server::Server(Config config) {
  shared_.config = std::move(config);
  shared_.live.store(std::make_shared<const Config>(shared_.config));
}

Server::~Server() { Stop(); }

absl::Status Server::Start() {
  RETURN_IF_ERROR(LoadTls());
  RETURN_IF_ERROR(MakeKeyStore());
  RETURN_IF_ERROR(OpenDirectory());
  MakeGate();
  RETURN_IF_ERROR(StartFleet());
  int shards = ShardCount(shared_.config);
  LimitConnectionsToDescriptors(shards);
  // The spool is locked and replayed, and delivery set up, before any listener opens.
  RETURN_IF_ERROR(StartSpoolAndDelivery(shards));
  MakeAuth();
  RETURN_IF_ERROR(OpenShards(shards));
  delivery_->Start();
  verifier_->Start();
  keys_->Start();
  RegisterMetrics();
  RETURN_IF_ERROR(StartAdmin());
  for (std::unique_ptr<Shard>& shard : shards_) {
    shard->Start();
  }
  const Config& config = shared_.config;
  LOG_INFO("chuted: %d shard(s), %d listener(s), %d account(s) in the directory", shards,
           static_cast<int>(config.listeners.size()),
           static_cast<int>(shared_.snapshot.load()->accounts().size()));
  for (const ListenerConfig& listener : config.listeners) {
    LOG_INFO("listening on %s (tls = %s)", listener.address, TlsModeName(listener.tls));
  }
  return absl::OkStatus();
}

void Server::Stop() {
  if (admin_ != nullptr) {
    admin_->Stop();
  }
  if (keys_ != nullptr) {
    keys_->Stop();  // a fetch in progress gives up at once
  }
  if (delivery_ != nullptr) {
    delivery_->StopVerifiers();  // a probe's waiters get "stopping" at once
  }
  for (std::unique_ptr<Shard>& shard : shards_) {
    shard->RequestStop();
  }
  for (std::unique_ptr<Shard>& shard : shards_) {
    shard->Join();
  }
  if (leases_ != nullptr) {
    leases_->Stop();  // after the shards: no session asks any more; the places are given back
  }
  if (verifier_ != nullptr) {
    verifier_->Stop();
  }
  if (delivery_ != nullptr) {
    // What is ready is delivered for a few seconds more; the rest stays in the spool.
    delivery_->Stop(kDeliveryDrain);
  }
  if (trace_ != nullptr) {
    trace_->Stop();  // after delivery: it writes what the drain did
  }
  absl::Status usage = FlushUsage();
  if (!usage.ok()) {
    LOG_ERROR("usage counts could not be saved: %s", usage.message());
  }
}

bool Server::Failed() const {
  for (const std::unique_ptr<Shard>& shard : shards_) {
    if (shard->failed()) {
      return true;
    }
  }
  return false;
}

const ShardCounters& Server::counters(int shard) const { return shards_[shard]->counters(); }

int64_t Server::queued_messages() const {
  return gauges_ != nullptr ? gauges_->messages.load() : 0;
}

}  // namespace chute::server
