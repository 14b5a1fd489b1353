// compose.cc: the composition root: builds each part chuted is made of (TLS, directory, gate,
// spool, delivery and its backend, trace, auth, shards, admin listener) for Server::Start.

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "admin/admin_server.h"
#include "admin/queue_api.h"
#include "admin/token_file.h"
#include "auth/key_store.h"
#include "auth/throttle.h"
#include "auth/verifier.h"
#include "base/log.h"
#include "base/status_macros.h"
#include "delivery/maildir.h"
#include "delivery/queue.h"
#include "delivery/report.h"
#include "delivery/smtp_client.h"
#include "fleet/tenant_leases.h"
#include "io/file.h"
#include "io/loop.h"
#include "net/socket.h"
#include "net/tls.h"
#include "policy/connection_gate.h"
#include "server/internal.h"
#include "server/server.h"
#include "server/shard.h"
#include "smtp/address.h"
#include "spool/spool.h"
#include "trace/trace.h"

namespace chute::server {

namespace {

// NodeName: the node's name in a fleet and in queue answers: [fleet] node_id, else the
// machine's host name.
std::string NodeName(const Config& config) {
  if (!config.fleet.node_id.empty()) {
    return config.fleet.node_id;
  }
  char host[256] = {};
  gethostname(host, sizeof(host) - 1);
  std::string name;
  for (const char* c = host; *c != '\0' && name.size() < 64; ++c) {
    bool safe =
        absl::ascii_isalnum(static_cast<unsigned char>(*c)) || *c == '.' || *c == '-' || *c == '_';
    name.push_back(safe ? *c : '_');  // it goes into Redis members and an HTTP header field
  }
  return name.empty() ? std::string("node") : name;
}

// argon2id threads: each check takes ~19 MiB and tens of milliseconds of one core.
constexpr int kVerifierThreads = 2;
// Descriptors kept free of client connections besides the per-shard and delivery ones.
constexpr int64_t kDescriptorHeadroom = 32;

// SmtpOptions: the delivery client's options for a route's settings `d`.
delivery::SmtpClientOptions SmtpOptions(const Config& config, const DeliveryConfig& d) {
  return delivery::ClientOptionsFor(d, config.server.hostname);
}

// ReportTargetOf: where a failure report about a message of (tenant, account) goes: the
// account's Reply-To, else the tenant's notification address; only ever into the tenant's
// accepted domains (as they are now).
delivery::ReportTarget ReportTargetOf(const directory::Snapshot& snapshot, int64_t tenant_id,
                                      int64_t account_id) {
  delivery::ReportTarget target;
  const directory::Tenant* tenant = snapshot.FindTenant(tenant_id);
  if (tenant == nullptr) {
    target.why = "its tenant is no longer in the directory";
    return target;
  }
  target.tenant = tenant->name;
  const directory::Account* account = nullptr;
  for (const directory::Account& a : snapshot.accounts()) {
    if (a.id == account_id) {
      account = &a;
    }
  }
  if (account != nullptr) {
    target.account = account->primary_address;
  }
  std::string to = account != nullptr && !account->reply_to.empty() ? account->reply_to
                                                                    : tenant->notification_address;
  if (to.empty()) {
    target.why = "the account has no Reply-To and its tenant no notification address";
    return target;
  }
  if (!snapshot.IsAcceptedDomain(tenant_id, smtp::SplitAddress(to).domain)) {
    target.why = absl::StrCat(to, " is not in an accepted domain of tenant ", tenant->name);
    return target;
  }
  target.to = std::move(to);
  return target;
}

// RouteTable: how the configuration names a route's table in an error.
std::string RouteTable(absl::string_view name) {
  return name == kDefaultRouteName ? std::string("[delivery]")
                                   : absl::StrCat("[[delivery.route]] \"", name, "\"");
}

absl::StatusOr<delivery::BackendFactory> MakeBackendFactory(
    const Config& config, const DeliveryConfig& d, std::shared_ptr<std::atomic<int64_t>> stop_at,
    std::shared_ptr<delivery::TargetHealth> health) {
  if (d.backend == DeliveryBackend::kMaildir) {
    // With verify_recipients only mailboxes that exist are accepted, and none is created.
    return delivery::MakeMaildirFactory(d.maildir_root, config.server.hostname,
                                        !d.verify_recipients);
  }
  delivery::SmtpClientOptions options = SmtpOptions(config, d);
  options.stop_at_unix_ms = std::move(stop_at);
  options.health = std::move(health);
  return delivery::MakeSmtpClientFactory(options);
}

}  // namespace

int ShardCount(const Config& config) {
  if (config.server.shards != 0) {
    return static_cast<int>(config.server.shards);
  }
  long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  return cpus > 0 ? static_cast<int>(cpus) : 1;
}

absl::Status Server::LoadTls() {
  const Config& config = shared_.config;
  bool needs_tls = false;
  for (const ListenerConfig& listener : config.listeners) {
    needs_tls |= listener.tls != TlsMode::kNone;
  }
  if (!needs_tls) {
    return absl::OkStatus();
  }
  absl::StatusOr<std::shared_ptr<net::TlsContext>> tls =
      net::TlsContext::Load(config.tls.certificate, config.tls.private_key);
  if (!tls.ok()) {
    return tls.status();
  }
  shared_.tls_context.store(*tls);
  return absl::OkStatus();
}

absl::Status Server::MakeKeyStore() {
  const OAuthConfig& oauth = shared_.config.oauth;
  auth::KeyStoreOptions options;
  options.cache_dir = absl::StrCat(shared_.config.server.data_dir, "/oauth-keys");
  options.refresh = absl::Seconds(oauth.refresh_s);
  options.fetch_interval_min = absl::Seconds(oauth.fetch_interval_min_s);
  options.keys_max_age = absl::Seconds(oauth.keys_max_age_s);
  options.stop_at_unix_ms = std::make_shared<std::atomic<int64_t>>(0);
  absl::StatusOr<auth::Fetch> fetch = auth::HttpsFetch(
      oauth.ca_file, absl::Seconds(oauth.fetch_timeout_s), options.stop_at_unix_ms);
  if (fetch.ok()) {
    options.fetch = *std::move(fetch);
  } else {
    // Only tenants whose keys come from a URL need it: they are told at each fetch.
    std::string why = absl::StrCat("[oauth] ca_file ", fetch.status().message());
    options.fetch = [why](const net::HttpsUrl&, size_t) -> absl::StatusOr<net::HttpResponse> {
      return absl::FailedPreconditionError(why);
    };
  }
  ASSIGN_OR_RETURN(keys_, auth::KeyStore::Create(std::move(options)));
  shared_.keys = keys_.get();
  return absl::OkStatus();
}

absl::Status Server::OpenDirectory() {
  const Config& config = shared_.config;
  absl::StatusOr<std::unique_ptr<directory::Store>> store =
      directory::Store::Open(config.directory.database, true);
  if (!store.ok()) {
    return store.status();
  }
  store_ = std::move(*store);
  database_file_ = std::make_unique<io::WatchedFile>(config.directory.database);
  RETURN_IF_ERROR(ReloadDirectory(true));
  return CheckListenerAccounts(config, *shared_.snapshot.load());
}

void Server::MakeGate() {
  const LimitsConfig& limits = shared_.config.limits;
  policy::ConnectionGate::Limits gate_limits;
  gate_limits.per_ip = static_cast<uint64_t>(limits.connections_per_ip);
  gate_limits.per_ip_exempt = limits.connections_per_ip_exempt;
  gate_limits.ipv6_prefix_bits = static_cast<int>(limits.connections_per_ip_ipv6_prefix_bits);
  gate_limits.per_tenant = static_cast<uint64_t>(limits.authenticated_connections_per_tenant);
  gate_limits.ip_slots = static_cast<size_t>(limits.ip_table_slots);
  shared_.gate = std::make_unique<policy::ConnectionGate>(gate_limits);
}

absl::Status Server::StartFleet() {
  const FleetConfig& fleet = shared_.config.fleet;
  if (fleet.redis.empty()) {
    return absl::OkStatus();  // alone: the in-process cap is the whole cap
  }
  fleet::LeaseOptions options;
  options.node_id = NodeName(shared_.config);
  options.redis = fleet.redis;
  if (!fleet.redis_password_file.empty()) {
    absl::StatusOr<std::string> text = io::ReadFile(fleet.redis_password_file);
    if (!text.ok()) {
      return absl::FailedPreconditionError(absl::StrCat("[fleet] redis_password_file ",
                                                        fleet.redis_password_file, ": ",
                                                        text.status().message()));
    }
    options.password = text->substr(0, text->find_first_of("\r\n"));
  }
  options.lease = absl::Seconds(fleet.lease_s);
  options.timeout = absl::Milliseconds(fleet.redis_timeout_ms);
  options.cap = static_cast<uint64_t>(shared_.config.limits.authenticated_connections_per_tenant);
  const policy::ConnectionGate* gate = shared_.gate.get();
  options.local_count = [gate](int64_t tenant_id) { return gate->TenantCount(tenant_id); };
  absl::StatusOr<std::unique_ptr<fleet::TenantLeases>> leases =
      fleet::TenantLeases::Start(std::move(options));
  if (!leases.ok()) {
    return absl::InternalError(absl::StrCat("[fleet]: ", leases.status().message()));
  }
  leases_ = *std::move(leases);
  shared_.leases = leases_.get();
  LOG_INFO("fleet: the tenant cap (%lld) is kept with the other nodes through Redis %s as %s",
           static_cast<long long>(shared_.config.limits.authenticated_connections_per_tenant),
           fleet.redis.c_str(), leases_->member_prefix().c_str());
  return absl::OkStatus();
}

void Server::MakeAuth() {
  const LimitsConfig& limits = shared_.config.limits;
  shared_.throttle = std::make_unique<auth::AuthThrottle>(ThrottleLimitsFor(limits));
  verifier_ = std::make_unique<auth::PasswordVerifier>(
      kVerifierThreads, static_cast<size_t>(limits.auth_cache_entries));
  shared_.verifier = verifier_.get();
}

absl::Status Server::OpenShards(int shards) {
  for (const ListenerConfig& listener : shared_.config.listeners) {
    RETURN_IF_ERROR(net::CheckAddressFree(listener.host_port));
  }
  for (int i = 0; i < shards; ++i) {
    shards_.push_back(std::make_unique<Shard>(i, &shared_));
    absl::Status status = shards_.back()->OpenListeners();
    if (!status.ok()) {
      shards_.clear();
      return status;
    }
  }
  // The segments replayed at start are reclaimed by the shards like their own.
  for (size_t i = 0; i < replayed_segments_.size(); ++i) {
    shards_[i % shards_.size()]->AdoptSegment(std::move(replayed_segments_[i]));
  }
  replayed_segments_.clear();
  return absl::OkStatus();
}

absl::Status Server::StartAdmin() {
  const Config& config = shared_.config;
  admin::AccessKeys keys;
  absl::StatusOr<std::string> token = admin::LoadOrCreateAdminToken(config.admin.token_file);
  if (!token.ok()) {
    return absl::Status(token.status().code(),
                        absl::StrCat("[admin] token_file: ", token.status().message()));
  }
  keys.admin_token = *std::move(token);
  if (!config.admin.metrics_token_file.empty()) {
    absl::StatusOr<std::string> metrics = admin::LoadMetricsToken(config.admin.metrics_token_file);
    if (!metrics.ok()) {
      return absl::Status(metrics.status().code(),
                          absl::StrCat("[admin] metrics_token_file: ", metrics.status().message()));
    }
    keys.metrics_token = *std::move(metrics);
  }
  keys.metrics_open = config.admin.metrics_open;
  std::optional<HostPort> address;
  if (!config.admin.address.empty()) {
    address = *ParseHostPort(config.admin.address);
    keys.listener_authority = config.admin.address;
    keys.listener_host = config.admin.address.substr(0, config.admin.address.rfind(':'));
  }
  admin_ = std::make_unique<admin::AdminServer>(
      std::move(keys), [this] { return MetricsText(); },
      [this](absl::string_view method, absl::string_view path) {
        return admin::HandleQueueRequest(*delivery_, method, path);
      });
  admin_->set_node(NodeName(config));
  admin_->ServeUsage(config.directory.database);
  absl::Status status = admin_->Start(address, config.admin.socket);
  if (!status.ok()) {
    return absl::Status(status.code(), absl::StrCat("admin listener: ", status.message()));
  }
  return absl::OkStatus();
}

void Server::LimitConnectionsToDescriptors(int shards) {
  const Config& config = shared_.config;
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0 || limit.rlim_cur == RLIM_INFINITY) {
    return;
  }
  // What is not a client connection: a few files per shard (ring, eventfd, listeners, spool
  // segments), one per delivery connection or kMaildirDescriptorsMax per Maildir worker, and
  // headroom for the admin listener, the directory, dead letters and refusing connections over the
  // cap.
  // Every route: its workers' descriptors, and one probe connection when it verifies.
  int64_t delivery = 0;
  delivery::Router router(config);
  for (size_t r = 0; r < router.size(); ++r) {
    const DeliveryConfig& d = router.route(r).settings;
    delivery += d.backend == DeliveryBackend::kMaildir
                    ? config.server.delivery_threads *
                          static_cast<int64_t>(delivery::kMaildirDescriptorsMax)
                    : d.connections_max + (d.verify_recipients ? 1 : 0);
  }
  int64_t reserve =
      kDescriptorHeadroom + delivery + shards * (8 + static_cast<int64_t>(config.listeners.size()));
  int64_t cap = std::max<int64_t>(static_cast<int64_t>(limit.rlim_cur) - reserve, 1);
  shared_.connections_fd_cap = cap;
  if (cap < config.limits.connections_max) {
    // Informational: the embedded default meets this on most machines (ulimit -n 1024..20000).
    LOG_INFO(
        "client connections: at most %d, as %d file descriptors allow (connections_max is "
        "%d; raise LimitNOFILE= / ulimit -n for more)",
        cap, static_cast<int64_t>(limit.rlim_cur), config.limits.connections_max);
  }
}

void Server::StartTrace() {
  const Config& config = shared_.config;
  std::string path = absl::StrCat(config.server.data_dir, "/trace.db");
  absl::StatusOr<std::unique_ptr<trace::Store>> store = trace::Store::Open(path, true);
  if (!store.ok()) {
    // The trace is a record, not the mail: chuted runs without it rather than not at all.
    LOG_ERROR("message trace off: %s", store.status().message());
    return;
  }
  trace_ = std::make_unique<trace::Writer>(*std::move(store), config.trace.retention_days);
  shared_.trace = trace_.get();
}

absl::Status Server::StartSpoolAndDelivery(int shards) {
  const Config& config = shared_.config;
  delivery::Router router(config);
  for (size_t r = 0; r < router.size(); ++r) {
    const DeliveryConfig& d = router.route(r).settings;
    if (d.backend != DeliveryBackend::kMaildir) {
      absl::Status valid = delivery::ValidateSmtpClientOptions(SmtpOptions(config, d));
      if (!valid.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat("route \"", router.route(r).name, "\": ", valid.message()));
      }
    }
  }
  absl::Status routed = CheckRoutes(router, *shared_.snapshot.load(), nullptr);
  if (!routed.ok()) {
    LOG_ERROR("delivery: %s", routed.message());  // the other domains' mail still flows
  }
  ASSIGN_OR_RETURN(shared_.spool_dir_fd, spool::LockSpool(config.spool.dir));
  shared_.boot_us = static_cast<uint64_t>(absl::ToUnixMicros(absl::Now()));
  gauges_ = std::make_unique<spool::SpoolGauges>();
  shared_.gauges = gauges_.get();
  StartTrace();
  std::string dead_dir = absl::StrCat(config.server.data_dir, "/dead");
  delivery::ReporterOptions reports;
  reports.hostname = config.server.hostname;
  reports.dir = absl::StrCat(config.server.data_dir, "/reports");
  reports.boot_us = shared_.boot_us;
  reports.gauges = gauges_.get();
  reports.trace = trace_.get();
  reports.address = [this](int64_t tenant_id, int64_t account_id) {
    return ReportTargetOf(*shared_.snapshot.load(), tenant_id, account_id);
  };
  reports.in_tenant = [this](int64_t tenant_id, absl::string_view address) {
    return shared_.snapshot.load()->IsAcceptedDomain(tenant_id, smtp::SplitAddress(address).domain);
  };
  reporter_ = std::make_unique<delivery::Reporter>(std::move(reports));
  std::vector<std::unique_ptr<delivery::DeliveryQueue>> queues;
  std::vector<std::string> maildir_roots;
  std::vector<std::shared_ptr<delivery::TargetHealth>> healths;  // per route: workers and probe
  // The delivery I/O threads, made when some route delivers over the network: every LMTP/SMTP
  // route's connection slots are tasks on their loops.
  std::vector<std::unique_ptr<io::LoopThread>> io_threads;
  std::vector<io::Loop*> io_loops;
  for (size_t r = 0; r < router.size() && io_threads.empty(); ++r) {
    if (router.route(r).settings.backend == DeliveryBackend::kMaildir) {
      continue;
    }
    for (int64_t i = 0; i < config.server.delivery_io_threads; ++i) {
      absl::StatusOr<std::unique_ptr<io::LoopThread>> thread =
          io::LoopThread::Start(absl::StrCat("chute-dlvio-", i));
      if (!thread.ok()) {
        return absl::Status(thread.status().code(), absl::StrCat("delivery I/O thread: io_uring: ",
                                                                 thread.status().message()));
      }
      io_loops.push_back((*thread)->loop());
      io_threads.push_back(*std::move(thread));
    }
  }
  for (size_t r = 0; r < router.size(); ++r) {
    const delivery::Route& route = router.route(r);
    const DeliveryConfig& d = route.settings;
    delivery::QueueOptions options;
    options.route = route.name;
    options.destination = delivery::Destination(d);
    options.stop_at_unix_ms = std::make_shared<std::atomic<int64_t>>(0);
    healths.push_back(std::make_shared<delivery::TargetHealth>(d.targets.size()));
    absl::StatusOr<delivery::BackendFactory> backend =
        MakeBackendFactory(config, d, options.stop_at_unix_ms, healths.back());
    if (!backend.ok()) {
      return absl::Status(backend.status().code(),
                          absl::StrCat(RouteTable(route.name), " ", backend.status().message()));
    }
    options.backend = *std::move(backend);
    options.workers = d.backend == DeliveryBackend::kMaildir
                          ? static_cast<int>(config.server.delivery_threads)
                          : static_cast<int>(d.connections_max);
    if (d.backend != DeliveryBackend::kMaildir) {
      options.loops = io_loops;
    }
    options.batch_messages_max = static_cast<size_t>(d.batch_messages_max);
    options.batch_delay = absl::Milliseconds(d.batch_delay_ms);
    options.retry_initial = absl::Seconds(d.retry_initial_s);
    options.retry_max = absl::Seconds(d.retry_max_s);
    options.give_up_after = absl::Seconds(d.give_up_after_s);
    options.delay_notice_after = absl::Seconds(d.delay_notice_after_s);
    options.final_delivery = d.backend != DeliveryBackend::kSmtp;
    options.dead_dir = dead_dir;
    options.gauges = gauges_.get();
    options.trace = trace_.get();
    options.reporter = reporter_.get();
    if (d.backend == DeliveryBackend::kMaildir &&
        std::find(maildir_roots.begin(), maildir_roots.end(), d.maildir_root) ==
            maildir_roots.end()) {
      maildir_roots.push_back(d.maildir_root);
      absl::Time started = absl::Now();
      size_t removed = delivery::CleanMaildirTmp(d.maildir_root, config.server.hostname, started);
      if (removed > 0) {
        LOG_INFO(
            "maildir %s: removed %d file(s) left in tmp/ (crash leftovers, or older than 36 h) "
            "in %d ms",
            d.maildir_root, static_cast<int64_t>(removed),
            absl::ToInt64Milliseconds(absl::Now() - started));
      }
    }
    if (router.size() > 1) {
      LOG_INFO("delivery route %s: %s", route.name, options.destination);
    }
    queues.push_back(std::make_unique<delivery::DeliveryQueue>(std::move(options)));
  }
  delivery_ = std::make_unique<delivery::DeliveryStage>(
      std::move(router), std::move(queues), dead_dir, gauges_.get(),
      [this](int64_t tenant_id) -> std::string {
        std::shared_ptr<const directory::Snapshot> snapshot = shared_.snapshot.load();
        const directory::Tenant* tenant =
            snapshot != nullptr ? snapshot->FindTenant(tenant_id) : nullptr;
        return tenant != nullptr ? tenant->name : "";
      },
      std::move(io_threads));
  for (size_t r = 0; r < delivery_->routes(); ++r) {
    const delivery::Route& route = delivery_->router().route(r);
    const DeliveryConfig& d = route.settings;
    if (!d.verify_recipients || d.backend == DeliveryBackend::kMaildir) {
      continue;
    }
    delivery::SmtpClientOptions probe = SmtpOptions(config, d);
    probe.io_timeout = absl::Seconds(d.verify_timeout_s);
    probe.health = healths[r];
    delivery::VerifierOptions options;
    options.route = route.name;
    ASSIGN_OR_RETURN(options.client, delivery::MakeSmtpClientMaker(probe));
    options.positive = absl::Seconds(d.verify_positive_s);
    options.negative = absl::Seconds(d.verify_negative_s);
    options.idle_close = absl::Seconds(d.connection_idle_s);
    options.down_hold = absl::Seconds(d.verify_timeout_s);
    options.loop = io_loops[r % io_loops.size()];  // a verifying route is LMTP/SMTP: they exist
    delivery_->SetVerifier(r, std::make_unique<delivery::RecipientVerifier>(std::move(options)));
  }
  shared_.delivery = delivery_.get();
  reporter_->set_stage(delivery_.get());
  size_t replayed = 0;
  size_t unrouted = 0;
  ASSIGN_OR_RETURN(
      replayed_segments_,
      spool::Replay(config.spool.dir, gauges_.get(), [&](spool::ReplayedRecord record) {
        unrouted += delivery_->Route(delivery::QueuedFrom(std::move(record.record.envelope),
                                                          std::move(record.record.marks),
                                                          std::move(record.ref),
                                                          /*replayed=*/true));
        ++replayed;
      }));
  LOG_INFO("spool %s: %d message(s) to deliver from an earlier run, in %d segment(s)%s; %s",
           config.spool.dir, static_cast<int64_t>(replayed),
           static_cast<int64_t>(replayed_segments_.size()),
           unrouted == 0 ? std::string()
                         : absl::StrCat(" (", unrouted, " recipient(s) without a route stay)"),
           delivery_->routes() == 1
               ? absl::StrCat("delivery to ", delivery_->queue(0).destination())
               : absl::StrCat(delivery_->routes(), " delivery routes"));
  size_t reports_left = reporter_->Replay();
  if (reports_left > 0) {
    LOG_INFO("delivery: %d failure report(s) from an earlier run to deliver",
             static_cast<int64_t>(reports_left));
  }
  (void)shards;
  return absl::OkStatus();
}

}  // namespace chute::server
