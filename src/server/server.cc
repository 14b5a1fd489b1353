// server.cc: chuted's lifecycle: starts its parts in order, stops them, says whether one failed.

#include "server/server.h"

#include <sys/stat.h>
#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "admin/admin_server.h"
#include "admin/queue_api.h"
#include "auth/throttle.h"
#include "auth/verifier.h"
#include "base/log.h"
#include "delivery/queue.h"
#include "metrics/registry.h"
#include "net/socket.h"
#include "net/tls.h"
#include "policy/connection_gate.h"
#include "server/internal.h"
#include "server/shard.h"
#include "spool/spool.h"
#include "trace/trace.h"

namespace chute::server {

namespace {

// argon2id threads: each check takes ~19 MiB and tens of milliseconds of one core.
constexpr int kVerifierThreads = 2;
// How long a stopping chuted keeps delivering what is ready (the spool keeps the rest).
constexpr absl::Duration kDeliveryDrain = absl::Seconds(10);

}  // namespace

Server::Server(Config config) {
  shared_.config = std::move(config);
  shared_.live.store(std::make_shared<const Config>(shared_.config));
}

Server::~Server() { Stop(); }

absl::Status Server::Start() {
  const Config& config = shared_.config;
  bool needs_tls = false;
  for (const ListenerConfig& listener : config.listeners) {
    needs_tls |= listener.tls != TlsMode::kNone;
  }
  if (needs_tls) {
    absl::StatusOr<std::shared_ptr<net::TlsContext>> tls =
        net::TlsContext::Load(config.tls.certificate, config.tls.private_key);
    if (!tls.ok()) {
      return tls.status();
    }
    shared_.tls_context.store(*tls);
  }
  absl::StatusOr<std::unique_ptr<directory::Store>> store =
      directory::Store::Open(config.directory.database, true);
  if (!store.ok()) {
    return store.status();
  }
  store_ = std::move(*store);
  struct stat database_stat {};
  if (stat(config.directory.database.c_str(), &database_stat) == 0) {
    database_dev_ = database_stat.st_dev;
    database_ino_ = database_stat.st_ino;
  }
  absl::Status status = ReloadDirectory(true);
  if (!status.ok()) {
    return status;
  }
  std::shared_ptr<const directory::Snapshot> snapshot = shared_.snapshot.load();
  status = CheckListenerAccounts(config, *snapshot);
  if (!status.ok()) {
    return status;
  }
  policy::ConnectionGate::Limits gate_limits;
  gate_limits.per_ip = static_cast<uint64_t>(config.limits.connections_per_ip);
  gate_limits.per_ip_exempt = config.limits.connections_per_ip_exempt;
  gate_limits.per_tenant =
      static_cast<uint64_t>(config.limits.authenticated_connections_per_tenant);
  gate_limits.ip_slots = static_cast<size_t>(config.limits.ip_table_slots);
  shared_.gate = std::make_unique<policy::ConnectionGate>(gate_limits);
  int shards = static_cast<int>(config.server.shards);
  if (shards == 0) {
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    shards = cpus > 0 ? static_cast<int>(cpus) : 1;
  }
  LimitConnectionsToDescriptors(shards);
  // The spool is locked and replayed, and delivery set up, before any listener opens.
  status = StartSpoolAndDelivery(shards);
  if (!status.ok()) {
    return status;
  }
  shared_.throttle = std::make_unique<auth::AuthThrottle>(ThrottleLimitsFor(config.limits));
  verifier_ = std::make_unique<auth::PasswordVerifier>(
      kVerifierThreads, static_cast<size_t>(config.limits.auth_cache_entries));
  shared_.verifier = verifier_.get();
  for (const ListenerConfig& listener : config.listeners) {
    status = net::CheckAddressFree(listener.host_port);
    if (!status.ok()) {
      return status;
    }
  }
  for (int i = 0; i < shards; ++i) {
    shards_.push_back(std::make_unique<Shard>(i, &shared_));
    status = shards_.back()->OpenListeners();
    if (!status.ok()) {
      shards_.clear();
      return status;
    }
  }
  for (size_t i = 0; i < replayed_segments_.size(); ++i) {
    shards_[i % shards_.size()]->AdoptSegment(std::move(replayed_segments_[i]));
  }
  replayed_segments_.clear();
  queue_->Start();
  verifier_->Start();
  RegisterMetrics();
  if (!config.admin.address.empty()) {
    admin_ = std::make_unique<admin::AdminServer>(
        [this] { return MetricsText(); },
        [this](absl::string_view method, absl::string_view path) {
          return admin::HandleQueueRequest(*queue_, method, path);
        });
    admin_->ServeUsage(config.directory.database);
    status = admin_->Start(*ParseHostPort(config.admin.address));
    if (!status.ok()) {
      return absl::Status(status.code(), absl::StrCat("admin listener: ", status.message()));
    }
  }
  for (std::unique_ptr<Shard>& shard : shards_) {
    shard->Start();
  }
  LOG_INFO("chuted: %d shard(s), %d listener(s), %d account(s) in the directory", shards,
           static_cast<int>(config.listeners.size()),
           static_cast<int>(snapshot->accounts().size()));
  for (const ListenerConfig& listener : config.listeners) {
    LOG_INFO("listening on %s (tls = %s)", listener.address, TlsModeName(listener.tls));
  }
  return absl::OkStatus();
}

void Server::Stop() {
  if (admin_ != nullptr) {
    admin_->Stop();
  }
  for (std::unique_ptr<Shard>& shard : shards_) {
    shard->RequestStop();
  }
  for (std::unique_ptr<Shard>& shard : shards_) {
    shard->Join();
  }
  if (verifier_ != nullptr) {
    verifier_->Stop();
  }
  if (queue_ != nullptr) {
    // What is ready is delivered for a few seconds more; the rest stays in the spool.
    queue_->Stop(kDeliveryDrain);
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
