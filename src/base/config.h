#pragma once

// The typed configuration of chuted and chutectl, loaded from TOML
// (docs/architecture.md, Interfaces).
//
// Every key is optional and has the default written below; every number carries its unit in its
// name and is range-checked; an unknown key, a value of the wrong type or out of range is an
// error whose message names the file, the line and the key. Empty paths are resolved against
// server.data_dir by the loader, so users of Config never see "".

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "base/net_address.h"
#include "base/tls_pin.h"

namespace chute {

enum class TlsMode { kStartTls, kImplicit, kNone };
enum class DeliveryBackend { kMaildir, kLmtp, kSmtp };
enum class DeliveryTls { kOff, kOpportunistic, kRequired };
// What RCPT answers when a route verifies recipients and its downstream cannot be asked.
enum class VerifyUnreachable { kAccept, kDefer };

absl::string_view TlsModeName(TlsMode mode);
absl::string_view DeliveryBackendName(DeliveryBackend backend);

struct ServerConfig {
  std::string hostname = "relay.example.test";
  int64_t shards = 0;  // 0 = one per online CPU
  std::string data_dir = "/var/lib/chute";
  int64_t recv_buffers = 1024;        // per shard; a power of two
  int64_t recv_buffer_bytes = 16384;  // size of each provided receive buffer
  int64_t delivery_threads = 4;       // Maildir writer threads (per Maildir route)
  // Threads that run every LMTP/SMTP route's connections, each on one io_uring loop.
  int64_t delivery_io_threads = 1;
};

struct ListenerConfig {
  std::string address = "0.0.0.0:587";
  HostPort host_port;  // parsed `address`
  TlsMode tls = TlsMode::kStartTls;
  std::vector<Cidr> allowed_networks;  // tls = "none" only
  std::string authenticate_as;         // tls = "none" only
  bool proxy_protocol = false;
  std::vector<Cidr> trusted_proxies;
  bool bare_lf_normalize = false;  // bare_lf = "reject" (default) | "normalize"
};

struct TlsConfig {
  std::string certificate = "/etc/chute/tls/cert.pem";
  std::string private_key = "/etc/chute/tls/key.pem";
};

struct LimitsConfig {
  int64_t connections_max = 100000;
  int64_t connections_per_ip = 100;
  std::vector<Cidr> connections_per_ip_exempt;
  // An IPv6 client is counted by its first this many bits (a /64 is one site: its 2^64
  // addresses are one client's to use); IPv4 by the whole address.
  int64_t connections_per_ip_ipv6_prefix_bits = 64;
  int64_t ip_table_slots = 131072;  // client addresses tracked at once (connection gate)
  int64_t authenticated_connections_per_tenant = 250;
  int64_t recipients_per_message = 50;
  int64_t message_size_bytes = 10485760;
  // Message bodies held in memory by every message being received, all sessions and shards
  // together (pinned receive buffers and copies): past it MAIL gets 452 4.3.1, and a body
  // that cannot grow within it is read to its end, dropped and refused the same way.
  int64_t receiving_bytes_max = 536870912;
  int64_t accounts_per_tenant = 100;
  int64_t command_timeout_s = 300;
  int64_t first_command_timeout_s = 30;     // a connection that sends no command is dropped
  int64_t data_rate_min_bytes_per_s = 500;  // over 30 s windows; 0 = off
  int64_t data_timeout_s = 600;
  int64_t session_timeout_s = 3600;
  int64_t errors_per_session = 10;
  int64_t auth_failures_per_session = 3;
  // The brake on password guessing (README: "Authentication failures").
  int64_t auth_failures_per_ip = 10;       // for one user name from one address, per window
  int64_t auth_failures_per_account = 30;  // per window, for addresses that failed for it
  int64_t auth_failed_users_per_ip = 10;   // distinct failing names from one address: spraying
  std::vector<Cidr> auth_throttle_exempt;  // never counted, delayed or refused
  int64_t auth_failure_window_s = 900;
  int64_t auth_failure_delay_max_s = 8;  // the longest wait before a 535
  int64_t auth_cache_entries = 16384;    // recently verified credentials kept; 0 = no cache
};

struct SpoolConfig {
  std::string dir;  // resolved: "" = <data_dir>/spool
  int64_t group_commit_delay_us = 500;
  int64_t bytes_max = 1073741824;
  int64_t messages_max = 100000;     // messages accepted and not yet settled, all shards
  int64_t segment_bytes = 67108864;  // a segment file is closed for appends past this size
};

// DeliveryConfig: the settings of one delivery route (docs/configuration.md, [delivery] and
// [[delivery.route]]). [delivery] itself is the default route; each [[delivery.route]] starts
// from [delivery]'s values and sets its own (backend, targets, tls_server_name and tls_pins
// are never inherited).
struct DeliveryConfig {
  DeliveryBackend backend = DeliveryBackend::kMaildir;
  std::string maildir_root;          // resolved: "" = <data_dir>/mail
  std::vector<std::string> targets;  // lmtp/smtp: "host:port" or "unix:/path", preferred first
  int64_t batch_messages_max = 64;
  int64_t batch_delay_ms = 2;
  int64_t retry_initial_s = 60;
  int64_t retry_max_s = 3600;
  int64_t give_up_after_s = 172800;
  // A recipient still deferred this long after its message arrived gets one delay notice, when
  // its RCPT asked for them (NOTIFY=DELAY); 0 = never.
  int64_t delay_notice_after_s = 14400;
  DeliveryTls tls = DeliveryTls::kOpportunistic;  // lmtp/smtp: STARTTLS when offered
  // lmtp/smtp, tls != off: how the target's certificate is verified (docs/configuration.md).
  std::string tls_ca_file = "/etc/ssl/certs/ca-certificates.crt";  // trust anchors, PEM
  std::string tls_server_name;   // "" = the target's address; a DNS name is also sent as SNI
  std::vector<TlsPin> tls_pins;  // tls = required: the server's key must be one of these
  int64_t connections_max = 16;  // lmtp/smtp: connections to target at once
  int64_t messages_per_connection_max = 1000;  // lmtp/smtp: then QUIT and reconnect
  int64_t connection_idle_s = 30;              // lmtp/smtp: an idle connection is closed
  int64_t timeout_s = 300;                     // lmtp/smtp: per command reply or write
  // Recipient verification at RCPT (docs/configuration.md, "Recipient verification"): Maildir
  // accepts only mailboxes that exist (and never creates one); LMTP/SMTP ask the target.
  bool verify_recipients = false;
  VerifyUnreachable verify_unreachable = VerifyUnreachable::kAccept;
  int64_t verify_positive_s = 3600;  // an address the target accepted is believed this long
  int64_t verify_negative_s = 300;   // and one it refused
  int64_t verify_timeout_s = 10;     // one probe, connect to RSET

  bool operator==(const DeliveryConfig&) const = default;
};

// The name of the route [delivery] itself describes.
inline constexpr absl::string_view kDefaultRouteName = "default";

// RouteConfig: one [[delivery.route]]: which recipients it serves and how it delivers.
struct RouteConfig {
  std::string name;                  // [a-z0-9][a-z0-9_-]*, at most 32 bytes; not "default"
  std::vector<std::string> domains;  // recipient domains (A-labels, lower-cased)
  std::vector<std::string> tenants;  // tenant names: every accepted domain of theirs
  DeliveryConfig delivery;

  bool operator==(const RouteConfig&) const = default;
};

struct DirectoryConfig {
  std::string database;  // resolved: "" = <data_dir>/directory.db
};

// The argon2id cost of new password hashes (chutectl). Stored hashes carry their own cost,
// so raising it affects only passwords set afterwards.
struct PasswordsConfig {
  int64_t argon2_memory_kib = 19456;
  int64_t argon2_passes = 2;
  int64_t argon2_lanes = 1;
};

// The admin listener (docs/operations.md, "The admin listener's security"): HTTP on a loopback
// address for scripts and Prometheus, each request carrying a bearer token, and a unix socket
// that chutectl uses, open only to root and chuted's own user (SO_PEERCRED).
struct AdminConfig {
  std::string address = "127.0.0.1:9587";  // "" = off; a loopback address only (plain HTTP)
  std::string socket;                      // resolved: "" = <data_dir>/admin.sock
  std::string token_file;  // resolved: "" = <data_dir>/admin.token, made 0600 at first start
  std::string metrics_token_file;  // "" = none: a token that may read /metrics and nothing else
  bool metrics_open = false;       // /metrics without a token (anyone who can reach the port)
};

struct LogConfig {
  bool json = false;  // JSON lines on stderr instead of key=value text (applies at start)
};

struct TraceConfig {
  int64_t retention_days = 90;  // message trace events older than this are pruned
};

// [oauth]: how chuted fetches the signing keys of tenants whose oauth_jwks is a URL or
// "discovery" (docs/operations.md, "OAuth key rotation"). Applies at start.
struct OAuthConfig {
  std::string ca_file = "/etc/ssl/certs/ca-certificates.crt";  // trusted for the IdP, PEM
  int64_t refresh_s = 3600;           // each tenant's keys are fetched again this often
  int64_t fetch_interval_min_s = 60;  // and never more often (unknown kids, failed fetches)
  int64_t fetch_timeout_s = 10;       // one fetch, from resolving the name to the last byte
  int64_t keys_max_age_s = 604800;    // keys not fetched again for this long are dropped
};

// [fleet]: several chuted nodes keeping the per-tenant cap together (docs/fleet.md). With
// `redis` empty (the default) a node is alone and the cap is its own, in process.
struct FleetConfig {
  std::string node_id;              // resolved: "" = the machine's host name
  std::string redis;                // "" = off; "host:port" or "unix:/path"
  std::string redis_password_file;  // "" = none; else AUTH with the file's first line
  int64_t lease_s = 30;             // a session's place lives this long unless renewed
  int64_t redis_timeout_ms = 500;   // one exchange with Redis; past it, the node's share
};

struct Config {
  ServerConfig server;
  std::vector<ListenerConfig> listeners;  // never empty after loading
  TlsConfig tls;
  LimitsConfig limits;
  SpoolConfig spool;
  DeliveryConfig delivery;
  // Whether [delivery] serves the domains no route names. false: such a domain is a
  // configuration error (chuted --check-config) and its recipients are refused 451 4.3.5.
  bool default_route = true;
  std::vector<RouteConfig> routes;  // [[delivery.route]], in the file's order
  DirectoryConfig directory;
  PasswordsConfig passwords;
  AdminConfig admin;
  LogConfig log;
  TraceConfig trace;
  OAuthConfig oauth;
  FleetConfig fleet;
};

// ParseConfig: parses TOML `text`; `source_name` (usually the file's path) prefixes every error
// message. Returns the validated Config or InvalidArgument naming source, line and key.
absl::StatusOr<Config> ParseConfig(absl::string_view text, absl::string_view source_name);

// LoadConfig: reads the file at `path` and parses it. NotFound / PermissionDenied when it cannot
// be read, InvalidArgument when it is not a valid configuration.
absl::StatusOr<Config> LoadConfig(const std::string& path);

}  // namespace chute
