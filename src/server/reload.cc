// reload.cc: what SIGHUP and the directory poll change while chuted runs: the configuration
// keys that can change live, the certificate, and the directory snapshot (reopening a
// database file replaced under it).

#include <cstring>

#include "absl/strings/str_cat.h"
#include "auth/key_store.h"
#include "auth/throttle.h"
#include "base/log.h"
#include "base/status_macros.h"
#include "fleet/tenant_leases.h"
#include "io/file.h"
#include "net/tls.h"
#include "policy/connection_gate.h"
#include "server/internal.h"
#include "server/server.h"
#include "trace/trace.h"

namespace chute::server {

namespace {

// RestartOnlyChanges: the keys that differ between `running` and `loaded` and cannot change
// while chuted runs (sockets, threads, tables and paths are made at start).
std::vector<std::string> RestartOnlyChanges(const Config& running, const Config& loaded) {
  std::vector<std::string> changed;
  auto check = [&](bool differs, const char* key) {
    if (differs) {
      changed.push_back(key);
    }
  };
  check(running.server.shards != loaded.server.shards, "server.shards");
  check(running.server.data_dir != loaded.server.data_dir, "server.data_dir");
  check(running.server.recv_buffers != loaded.server.recv_buffers, "server.recv_buffers");
  check(running.server.recv_buffer_bytes != loaded.server.recv_buffer_bytes,
        "server.recv_buffer_bytes");
  check(running.server.delivery_threads != loaded.server.delivery_threads,
        "server.delivery_threads");
  check(running.server.delivery_io_threads != loaded.server.delivery_io_threads,
        "server.delivery_io_threads");
  bool listeners_differ = running.listeners.size() != loaded.listeners.size();
  for (size_t i = 0; !listeners_differ && i < running.listeners.size(); ++i) {
    const ListenerConfig& a = running.listeners[i];
    const ListenerConfig& b = loaded.listeners[i];
    auto cidrs_differ = [](const std::vector<Cidr>& x, const std::vector<Cidr>& y) {
      if (x.size() != y.size()) {
        return true;
      }
      for (size_t j = 0; j < x.size(); ++j) {
        if (x[j].network != y[j].network || x[j].prefix_bits != y[j].prefix_bits) {
          return true;
        }
      }
      return false;
    };
    listeners_differ =
        a.address != b.address || a.tls != b.tls || a.authenticate_as != b.authenticate_as ||
        a.proxy_protocol != b.proxy_protocol || a.bare_lf_normalize != b.bare_lf_normalize ||
        cidrs_differ(a.allowed_networks, b.allowed_networks) ||
        cidrs_differ(a.trusted_proxies, b.trusted_proxies);
  }
  check(listeners_differ, "[[listener]]");
  check(running.log.json != loaded.log.json, "log.json");
  check(running.fleet.node_id != loaded.fleet.node_id, "fleet.node_id");
  check(running.fleet.redis != loaded.fleet.redis, "fleet.redis");
  check(running.fleet.redis_password_file != loaded.fleet.redis_password_file,
        "fleet.redis_password_file");
  check(running.fleet.lease_s != loaded.fleet.lease_s, "fleet.lease_s");
  check(running.fleet.redis_timeout_ms != loaded.fleet.redis_timeout_ms, "fleet.redis_timeout_ms");
  check(running.limits.ip_table_slots != loaded.limits.ip_table_slots, "limits.ip_table_slots");
  check(running.limits.connections_per_ip_ipv6_prefix_bits !=
            loaded.limits.connections_per_ip_ipv6_prefix_bits,
        "limits.connections_per_ip_ipv6_prefix_bits");
  bool exempt_differ = running.limits.connections_per_ip_exempt.size() !=
                       loaded.limits.connections_per_ip_exempt.size();
  for (size_t i = 0; !exempt_differ && i < running.limits.connections_per_ip_exempt.size(); ++i) {
    const Cidr& a = running.limits.connections_per_ip_exempt[i];
    const Cidr& b = loaded.limits.connections_per_ip_exempt[i];
    exempt_differ = a.network != b.network || a.prefix_bits != b.prefix_bits;
  }
  check(exempt_differ, "limits.connections_per_ip_exempt");
  check(running.limits.auth_cache_entries != loaded.limits.auth_cache_entries,
        "limits.auth_cache_entries");
  check(running.spool.dir != loaded.spool.dir, "spool.dir");
  const DeliveryConfig& d1 = running.delivery;
  const DeliveryConfig& d2 = loaded.delivery;
  check(d1.backend != d2.backend || d1.maildir_root != d2.maildir_root ||
            d1.targets != d2.targets || d1.batch_messages_max != d2.batch_messages_max ||
            d1.batch_delay_ms != d2.batch_delay_ms || d1.retry_initial_s != d2.retry_initial_s ||
            d1.retry_max_s != d2.retry_max_s || d1.give_up_after_s != d2.give_up_after_s ||
            d1.delay_notice_after_s != d2.delay_notice_after_s || d1.tls != d2.tls ||
            d1.connections_max != d2.connections_max ||
            d1.messages_per_connection_max != d2.messages_per_connection_max ||
            d1.connection_idle_s != d2.connection_idle_s || d1.timeout_s != d2.timeout_s ||
            d1.tls_ca_file != d2.tls_ca_file || d1.tls_server_name != d2.tls_server_name ||
            d1.tls_pins != d2.tls_pins || d1.verify_recipients != d2.verify_recipients ||
            d1.verify_unreachable != d2.verify_unreachable ||
            d1.verify_positive_s != d2.verify_positive_s ||
            d1.verify_negative_s != d2.verify_negative_s ||
            d1.verify_timeout_s != d2.verify_timeout_s,
        "[delivery]");
  check(running.default_route != loaded.default_route || running.routes != loaded.routes,
        "[[delivery.route]]");
  check(running.spool.group_commit_delay_us != loaded.spool.group_commit_delay_us ||
            running.spool.segment_bytes != loaded.spool.segment_bytes,
        "[spool]");
  check(running.directory.database != loaded.directory.database, "directory.database");
  const OAuthConfig& o1 = running.oauth;
  const OAuthConfig& o2 = loaded.oauth;
  check(o1.ca_file != o2.ca_file || o1.refresh_s != o2.refresh_s ||
            o1.fetch_interval_min_s != o2.fetch_interval_min_s ||
            o1.fetch_timeout_s != o2.fetch_timeout_s || o1.keys_max_age_s != o2.keys_max_age_s,
        "[oauth]");
  const AdminConfig& a1 = running.admin;
  const AdminConfig& a2 = loaded.admin;
  check(a1.address != a2.address || a1.socket != a2.socket || a1.token_file != a2.token_file ||
            a1.metrics_token_file != a2.metrics_token_file || a1.metrics_open != a2.metrics_open,
        "[admin]");
  return changed;
}

}  // namespace

auth::ThrottleLimits ThrottleLimitsFor(const LimitsConfig& limits) {
  auth::ThrottleLimits out;
  out.failures_per_ip = limits.auth_failures_per_ip;
  out.failures_per_account = limits.auth_failures_per_account;
  out.users_per_ip = limits.auth_failed_users_per_ip;
  out.exempt = limits.auth_throttle_exempt;
  out.window = absl::Seconds(limits.auth_failure_window_s);
  out.delay_max = absl::Seconds(limits.auth_failure_delay_max_s);
  return out;
}

absl::Status Server::ReloadConfig(const std::string& path) {
  absl::StatusOr<Config> loaded = LoadConfig(path);
  if (!loaded.ok()) {
    return loaded.status();
  }
  std::vector<std::string> restart = RestartOnlyChanges(shared_.config, *loaded);
  for (const std::string& key : restart) {
    LOG_WARNING("%s: %s changed; it takes effect after a restart", path, key);
  }
  // What can change live: the host name, the per-session limits, connections_max, the caps,
  // the certificate paths, the argon2 cost. The rest keeps its running values.
  auto live = std::make_shared<Config>(shared_.config);
  live->server.hostname = loaded->server.hostname;
  live->tls = loaded->tls;
  live->passwords = loaded->passwords;
  // The spool's bounds are read per MAIL (back-pressure); its paths and timing are not.
  live->spool.bytes_max = loaded->spool.bytes_max;
  live->spool.messages_max = loaded->spool.messages_max;
  LimitsConfig limits = loaded->limits;
  limits.ip_table_slots = shared_.config.limits.ip_table_slots;
  limits.connections_per_ip_ipv6_prefix_bits =
      shared_.config.limits.connections_per_ip_ipv6_prefix_bits;
  limits.connections_per_ip_exempt = shared_.config.limits.connections_per_ip_exempt;
  limits.auth_cache_entries = shared_.config.limits.auth_cache_entries;
  live->limits = limits;
  shared_.throttle->SetLimits(ThrottleLimitsFor(limits));
  shared_.gate->SetCaps(static_cast<uint64_t>(limits.connections_per_ip),
                        static_cast<uint64_t>(limits.authenticated_connections_per_tenant));
  if (leases_ != nullptr) {
    leases_->SetCap(static_cast<uint64_t>(limits.authenticated_connections_per_tenant));
  }
  shared_.live.store(std::shared_ptr<const Config>(std::move(live)));
  if (trace_ != nullptr) {
    trace_->SetRetentionDays(loaded->trace.retention_days);
  }
  LOG_INFO("%s: configuration reloaded", path);
  return absl::OkStatus();
}

absl::Status Server::ReloadTls() {
  if (shared_.tls_context.load() == nullptr) {
    return absl::OkStatus();  // no listener uses TLS
  }
  std::shared_ptr<const Config> live = shared_.live.load();
  absl::StatusOr<std::shared_ptr<net::TlsContext>> tls =
      net::TlsContext::Load(live->tls.certificate, live->tls.private_key);
  if (!tls.ok()) {
    return tls.status();
  }
  shared_.tls_context.store(*tls);
  LOG_INFO("certificate reloaded from %s", live->tls.certificate);
  return absl::OkStatus();
}

absl::Status Server::ReopenIfReplaced(bool* reopened) {
  // A restore from backup replaces the file: the open handle would go on reading the deleted
  // copy, and later changes (a password change, basic auth turned off) would be ignored.
  const std::string& path = database_file_->path();
  auto reopen = [&](const io::WatchedFile::Found& found) -> absl::Status {
    if (found.error != 0) {
      return absl::NotFoundError(absl::StrCat(path, " is missing: ", std::strerror(found.error)));
    }
    absl::StatusOr<std::unique_ptr<directory::Store>> store = directory::Store::Open(path, false);
    if (!store.ok()) {
      return absl::Status(
          store.status().code(),
          absl::StrCat(path, " was replaced and cannot be opened: ", store.status().message()));
    }
    LOG_WARNING("%s was replaced (inode %d, was %d): reopened", path,
                static_cast<int64_t>(found.inode), static_cast<int64_t>(found.was));
    store_ = std::move(*store);
    return absl::OkStatus();
  };
  ASSIGN_OR_RETURN(*reopened, database_file_->ReopenIfReplaced(reopen));
  return absl::OkStatus();
}

absl::Status Server::ReloadDirectory(bool force) {
  bool reopened = false;
  RETURN_IF_ERROR(ReopenIfReplaced(&reopened));
  force |= reopened;
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
  std::vector<auth::TenantKeySource> sources;
  for (const directory::Tenant& tenant : (*snapshot)->tenants()) {
    absl::StatusOr<auth::KeySource> source =
        auth::ParseKeySource(tenant.oauth_jwks, tenant.oauth_issuer);
    if (!source.ok()) {
      LOG_WARNING("tenant %s: XOAUTH2 will fail: oauth_jwks: %s", tenant.name,
                  source.status().message());
      continue;
    }
    sources.push_back(
        auth::TenantKeySource{tenant.id, tenant.name, tenant.oauth_issuer, *std::move(source)});
  }
  // SIGHUP (force) also reads every JWKS file again, changed or not.
  keys_->SetSources(std::move(sources), absl::Now(), force);
  shared_.snapshot.store(*snapshot);
  if (!force) {
    LOG_INFO("directory reloaded: %d tenant(s), %d account(s)",
             static_cast<int>((*snapshot)->tenants().size()),
             static_cast<int>((*snapshot)->accounts().size()));
  }
  return absl::OkStatus();
}

}  // namespace chute::server
