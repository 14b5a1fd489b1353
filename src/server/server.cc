#include "server/server.h"

#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "base/log.h"
#include "delivery/maildir.h"
#include "server/shard.h"

namespace chute::server {

Server::Server(Config config) { shared_.config = std::move(config); }

Server::~Server() { Stop(); }

absl::Status Server::Start() {
  const Config& config = shared_.config;
  for (const ListenerConfig& listener : config.listeners) {
    if (listener.tls != TlsMode::kNone) {
      return absl::UnimplementedError(absl::StrCat(
          "listener ", listener.address, ": tls = \"", TlsModeName(listener.tls),
          "\" needs TLS, which this build does not terminate yet; use tls = \"none\" with "
          "allowed_networks and authenticate_as"));
    }
    if (listener.proxy_protocol) {
      return absl::UnimplementedError(
          absl::StrCat("listener ", listener.address, ": proxy_protocol is not supported yet"));
    }
  }
  if (config.delivery.backend != DeliveryBackend::kMaildir) {
    return absl::UnimplementedError(absl::StrCat(
        "delivery.backend = \"", DeliveryBackendName(config.delivery.backend),
        "\" is not supported yet; use \"maildir\""));
  }
  absl::StatusOr<std::unique_ptr<directory::Store>> store =
      directory::Store::Open(config.directory.database, true);
  if (!store.ok()) {
    return store.status();
  }
  store_ = std::move(*store);
  absl::Status status = ReloadDirectory(true);
  if (!status.ok()) {
    return status;
  }
  std::shared_ptr<const directory::Snapshot> snapshot = shared_.snapshot.load();
  for (const ListenerConfig& listener : config.listeners) {
    if (!listener.authenticate_as.empty() &&
        snapshot->FindAccount(listener.authenticate_as) == nullptr) {
      return absl::FailedPreconditionError(absl::StrCat(
          "listener ", listener.address, ": authenticate_as ", listener.authenticate_as,
          " is not an account in the directory (", config.directory.database,
          "); create it with chutectl account new"));
    }
  }
  int shards = static_cast<int>(config.server.shards);
  if (shards == 0) {
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    shards = cpus > 0 ? static_cast<int>(cpus) : 1;
  }
  delivery_ = std::make_unique<delivery::MaildirDelivery>(
      config.delivery.maildir_root, config.server.hostname,
      static_cast<int>(config.server.delivery_threads),
      static_cast<size_t>(config.delivery.batch_messages_max));
  shared_.delivery = delivery_.get();
  for (int i = 0; i < shards; ++i) {
    shards_.push_back(std::make_unique<Shard>(i, &shared_));
    status = shards_.back()->OpenListeners();
    if (!status.ok()) {
      shards_.clear();
      return status;
    }
  }
  delivery_->Start();
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

absl::Status Server::ReloadDirectory(bool force) {
  absl::StatusOr<int64_t> version = store_->DataVersion();
  if (!version.ok()) {
    return version.status();
  }
  if (!force && *version == data_version_) {
    return absl::OkStatus();
  }
  absl::StatusOr<std::shared_ptr<const directory::Snapshot>> snapshot = store_->LoadSnapshot();
  if (!snapshot.ok()) {
    return snapshot.status();
  }
  data_version_ = *version;
  shared_.snapshot.store(*snapshot);
  if (!force) {
    LOG_INFO("directory reloaded: %d tenant(s), %d account(s)",
             static_cast<int>((*snapshot)->tenants().size()),
             static_cast<int>((*snapshot)->accounts().size()));
  }
  return absl::OkStatus();
}

void Server::Stop() {
  for (std::unique_ptr<Shard>& shard : shards_) {
    shard->RequestStop();
  }
  for (std::unique_ptr<Shard>& shard : shards_) {
    shard->Join();
  }
  if (delivery_ != nullptr) {
    delivery_->Stop();
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

}  // namespace chute::server
