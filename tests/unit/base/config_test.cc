// config_test.cc: unit tests for the configuration loader: defaults, ranges, errors, listeners.

#include "base/config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace chute {
namespace {

absl::StatusOr<Config> Parse(const std::string& text) { return ParseConfig(text, "test.toml"); }

std::string ErrorOf(const std::string& text) {
  absl::StatusOr<Config> config = Parse(text);
  EXPECT_FALSE(config.ok()) << text;
  return config.ok() ? "" : std::string(config.status().message());
}

TEST(ConfigTest, EmptyFileGivesTheDocumentedDefaults) {
  absl::StatusOr<Config> config = Parse("");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->server.hostname, "relay.example.test");
  EXPECT_EQ(config->server.shards, 0);
  EXPECT_EQ(config->server.data_dir, "/var/lib/chute");
  ASSERT_EQ(config->listeners.size(), 1u);
  EXPECT_EQ(config->listeners[0].address, "0.0.0.0:587");
  EXPECT_EQ(config->listeners[0].host_port.port, 587);
  EXPECT_EQ(config->listeners[0].tls, TlsMode::kStartTls);
  EXPECT_EQ(config->tls.certificate, "/etc/chute/tls/cert.pem");
  EXPECT_EQ(config->limits.connections_max, 100000);
  EXPECT_EQ(config->limits.connections_per_ip, 100);
  EXPECT_EQ(config->limits.connections_per_ip_ipv6_prefix_bits, 64);
  EXPECT_EQ(config->limits.authenticated_connections_per_tenant, 250);
  EXPECT_EQ(config->limits.recipients_per_message, 50);
  EXPECT_EQ(config->limits.message_size_bytes, 10485760);
  EXPECT_EQ(config->limits.accounts_per_tenant, 100);
  EXPECT_EQ(config->limits.command_timeout_s, 300);
  EXPECT_EQ(config->limits.data_timeout_s, 600);
  EXPECT_EQ(config->limits.session_timeout_s, 3600);
  EXPECT_EQ(config->limits.errors_per_session, 10);
  EXPECT_EQ(config->limits.auth_failures_per_session, 3);
  EXPECT_EQ(config->spool.dir, "/var/lib/chute/spool");
  EXPECT_EQ(config->spool.group_commit_delay_us, 500);
  EXPECT_EQ(config->spool.bytes_max, 1073741824);
  EXPECT_EQ(config->delivery.backend, DeliveryBackend::kMaildir);
  EXPECT_EQ(config->delivery.maildir_root, "/var/lib/chute/mail");
  EXPECT_EQ(config->delivery.batch_messages_max, 64);
  EXPECT_EQ(config->delivery.give_up_after_s, 172800);
  EXPECT_EQ(config->delivery.tls, DeliveryTls::kOpportunistic);
  EXPECT_EQ(config->delivery.tls_ca_file, "/etc/ssl/certs/ca-certificates.crt");
  EXPECT_EQ(config->delivery.tls_server_name, "");
  EXPECT_TRUE(config->delivery.tls_pins.empty());
  EXPECT_EQ(config->directory.database, "/var/lib/chute/directory.db");
  EXPECT_EQ(config->admin.address, "127.0.0.1:9587");
  EXPECT_EQ(config->passwords.argon2_memory_kib, 19456);
  EXPECT_EQ(config->passwords.argon2_passes, 2);
  EXPECT_EQ(config->limits.auth_cache_entries, 16384);
}

TEST(ConfigTest, FullShapeFromTheDesign) {
  absl::StatusOr<Config> config = Parse(R"(
[server]
hostname = "mx.corp.test"
shards = 2
data_dir = "/srv/chute"

[[listener]]
address = "0.0.0.0:587"
tls = "starttls"

[[listener]]
address = "[::1]:2525"
tls = "none"
allowed_networks = ["::1/128", "127.0.0.0/8"]
authenticate_as = "printer@corp.test"
proxy_protocol = true
trusted_proxies = ["10.0.0.0/8"]

[limits]
connections_per_ip = 5
connections_per_ip_exempt = ["192.0.2.0/24"]
recipients_per_message = 10

[spool]
dir = "/fast/spool"

[delivery]
backend = "lmtp"
target = "unix:/run/dovecot/lmtp"

[admin]
address = ""
)");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->server.shards, 2);
  ASSERT_EQ(config->listeners.size(), 2u);
  EXPECT_EQ(config->listeners[1].tls, TlsMode::kNone);
  EXPECT_EQ(config->listeners[1].host_port.port, 2525);
  EXPECT_EQ(config->listeners[1].allowed_networks.size(), 2u);
  EXPECT_TRUE(config->listeners[1].proxy_protocol);
  EXPECT_EQ(config->limits.connections_per_ip, 5);
  EXPECT_EQ(config->spool.dir, "/fast/spool");
  EXPECT_EQ(config->delivery.maildir_root, "/srv/chute/mail");
  EXPECT_EQ(config->delivery.backend, DeliveryBackend::kLmtp);
  EXPECT_EQ(config->admin.address, "");
}

TEST(ConfigTest, ErrorsNameFileLineAndKey) {
  EXPECT_EQ(ErrorOf("[limits]\n\nrecipients_per_message = 0\n"),
            "test.toml:3: limits.recipients_per_message: 0 is out of range 1..1000");
  EXPECT_EQ(ErrorOf("[limits]\nrecipient_per_message = 5\n"),
            "test.toml:2: unknown key 'limits.recipient_per_message'");
  EXPECT_EQ(ErrorOf("[server]\nshards = \"two\"\n"),
            "test.toml:2: server.shards: expected an integer");
  EXPECT_EQ(ErrorOf("[bogus]\nx = 1\n"), "test.toml:1: unknown key 'bogus'");
  EXPECT_EQ(
      ErrorOf("[delivery]\nbackend = \"mbox\"\n"),
      "test.toml:2: delivery.backend: \"mbox\" is not one of \"maildir\", \"lmtp\", \"smtp\"");
  EXPECT_TRUE(absl::StartsWith(ErrorOf("[server\n"), "test.toml:1: "));
}

TEST(ConfigTest, AnAddressServesOneListenerOnly) {
  // With SO_REUSEPORT both would bind and share the connections at random (a test hung so).
  absl::StatusOr<Config> twice = ParseConfig(
      "[[listener]]\naddress = \"127.0.0.1:2525\"\n"
      "[[listener]]\naddress = \"127.0.0.1:2525\"\ntls = \"implicit\"\n",
      "t.toml");
  ASSERT_FALSE(twice.ok());
  EXPECT_EQ(twice.status().message(), "t.toml: [[listener]] address 127.0.0.1:2525 is given twice");
  absl::StatusOr<Config> admin = ParseConfig(
      "[[listener]]\naddress = \"127.0.0.1:2525\"\n[admin]\naddress = \"127.0.0.1:2525\"\n",
      "t.toml");
  ASSERT_FALSE(admin.ok());
  EXPECT_EQ(admin.status().message(),
            "t.toml: [admin] address 127.0.0.1:2525 is also a [[listener]] address");
  EXPECT_TRUE(ParseConfig("[[listener]]\naddress = \"127.0.0.1:2525\"\n"
                          "[admin]\naddress = \"127.0.0.1:2526\"\n",
                          "t.toml")
                  .ok());
}

TEST(ConfigTest, RangesAtTheEdges) {
  EXPECT_TRUE(Parse("[limits]\nrecipients_per_message = 1000\n").ok());
  EXPECT_FALSE(Parse("[limits]\nrecipients_per_message = 1001\n").ok());
  EXPECT_TRUE(Parse("[limits]\nmessage_size_bytes = 1024\n").ok());
  EXPECT_FALSE(Parse("[limits]\nmessage_size_bytes = 1023\n").ok());
  EXPECT_TRUE(Parse("[server]\nshards = 256\n").ok());
  EXPECT_FALSE(Parse("[server]\nshards = -1\n").ok());
  EXPECT_FALSE(Parse("[limits]\nconnections_max = 10\nconnections_per_ip = 11\n").ok());
  EXPECT_TRUE(Parse("[limits]\nconnections_per_ip_ipv6_prefix_bits = 48\n").ok());
  EXPECT_TRUE(Parse("[limits]\nconnections_per_ip_ipv6_prefix_bits = 128\n").ok());
  EXPECT_FALSE(Parse("[limits]\nconnections_per_ip_ipv6_prefix_bits = 47\n").ok());
  EXPECT_FALSE(Parse("[limits]\nconnections_per_ip_ipv6_prefix_bits = 129\n").ok());
  EXPECT_FALSE(Parse("[delivery]\nretry_initial_s = 100\nretry_max_s = 50\n").ok());
}

TEST(ConfigTest, ListenerRules) {
  EXPECT_TRUE(
      absl::StrContains(ErrorOf("[[listener]]\naddress = \"127.0.0.1:25\"\ntls = \"none\"\n"),
                        "needs allowed_networks"));
  EXPECT_TRUE(absl::StrContains(ErrorOf("[[listener]]\naddress = \"127.0.0.1:25\"\ntls = \"none\"\n"
                                        "allowed_networks = [\"127.0.0.0/8\"]\n"),
                                "needs authenticate_as"));
  EXPECT_TRUE(absl::StrContains(ErrorOf("[[listener]]\nallowed_networks = [\"127.0.0.0/8\"]\n"),
                                "only a listener with tls = \"none\""));
  EXPECT_TRUE(
      absl::StrContains(ErrorOf("[[listener]]\naddress = \"localhost:25\"\n"), "listener.address"));
  EXPECT_TRUE(absl::StrContains(ErrorOf("[[listener]]\naddress = \"127.0.0.1:0\"\n"), "port"));
  EXPECT_TRUE(
      absl::StrContains(ErrorOf("[[listener]]\nproxy_protocol = true\n"), "needs trusted_proxies"));
  EXPECT_TRUE(absl::StrContains(ErrorOf("[limits]\nconnections_per_ip_exempt = [\"10.1.0.0/8\"]\n"),
                                "host bits"));
  EXPECT_TRUE(absl::StrContains(ErrorOf("[delivery]\nbackend = \"smtp\"\n"), "need target"));
}

constexpr const char* kPinA = "sha256/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
constexpr const char* kPinB = "sha256/BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=";

TEST(ConfigTest, DeliveryVerificationKeys) {
  absl::StatusOr<Config> config = Parse(absl::StrCat(
      "[delivery]\nbackend = \"smtp\"\ntarget = \"192.0.2.7:25\"\ntls = \"required\"\n"
      "tls_ca_file = \"/etc/chute/smarthost-ca.pem\"\ntls_server_name = \"mx.example.test\"\n"
      "tls_pins = [\"",
      kPinA, "\", \"", kPinB, "\"]\n"));
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->delivery.tls_ca_file, "/etc/chute/smarthost-ca.pem");
  EXPECT_EQ(config->delivery.tls_server_name, "mx.example.test");
  ASSERT_EQ(config->delivery.tls_pins.size(), 2u);
  EXPECT_EQ(config->delivery.tls_pins[0], TlsPin{});
  TlsPin sevens;
  sevens.fill(7);
  EXPECT_EQ(config->delivery.tls_pins[1], sevens);
  EXPECT_TRUE(Parse("[delivery]\ntls_server_name = \"192.0.2.7\"\n").ok());
  EXPECT_TRUE(Parse("[delivery]\ntls_server_name = \"2001:db8::7\"\n").ok());
}

TEST(ConfigTest, DeliveryVerificationErrors) {
  EXPECT_EQ(ErrorOf("[delivery]\ntls = \"required\"\ntls_pins = [\"sha256/abc\"]\n"),
            "test.toml:3: delivery.tls_pins: \"sha256/abc\": after \"sha256/\" a pin is the "
            "base64 of 32 bytes (44 characters ending in \"=\")");
  EXPECT_TRUE(absl::StrContains(
      ErrorOf("[delivery]\ntls = \"required\"\ntls_pins = [\"sha1/abc\"]\n"), "starts with"));
  EXPECT_TRUE(absl::StrContains(ErrorOf("[delivery]\ntls = \"required\"\ntls_pins = [1]\n"),
                                "expected an array"));
  std::string many = "[delivery]\ntls = \"required\"\ntls_pins = [";
  for (int i = 0; i < 17; ++i) {
    absl::StrAppend(&many, i == 0 ? "" : ", ", "\"", kPinA, "\"");
  }
  EXPECT_TRUE(absl::StrContains(ErrorOf(many + "]\n"), "more than 16 entries"));
  EXPECT_EQ(ErrorOf(absl::StrCat("[delivery]\ntls_pins = [\"", kPinA, "\"]\n")),
            "test.toml:2: delivery.tls_pins: pins are enforced only with tls = \"required\" "
            "(opportunistic TLS accepts any certificate)");
  EXPECT_EQ(ErrorOf("[delivery]\ntls = \"off\"\ntls_ca_file = \"/ca.pem\"\n"),
            "test.toml:3: delivery.tls_ca_file: tls = \"off\" verifies no certificate; remove the "
            "key or turn tls on");
  EXPECT_TRUE(absl::StrContains(ErrorOf("[delivery]\ntls_ca_file = \"\"\n"), "must not be empty"));
  EXPECT_TRUE(absl::StrContains(ErrorOf("[delivery]\ntls_server_name = \"mx example\"\n"),
                                "expected a DNS name or an IP address"));
  EXPECT_TRUE(absl::StrContains(
      ErrorOf("[delivery]\nbackend = \"lmtp\"\ntarget = \"unix:/run/lmtp\"\ntls = \"required\"\n"),
      "needs tls_server_name"));
  EXPECT_TRUE(Parse("[delivery]\nbackend = \"lmtp\"\ntarget = \"unix:/run/lmtp\"\n"
                    "tls = \"required\"\ntls_server_name = \"lmtp.example.test\"\n")
                  .ok());
}

TEST(ConfigTest, RoutesStartFromDeliveryAndSetTheirOwnKeys) {
  absl::StatusOr<Config> config = Parse(R"([delivery]
backend = "lmtp"
target = "127.0.0.1:24"
retry_initial_s = 30
tls = "required"
tls_server_name = "lmtp.example.test"
verify_recipients = true

[[delivery.route]]
name = "staff"
domains = ["Contoso.TEST", "fabrikam.test"]
backend = "smtp"
targets = ["127.0.0.1:2525", "[::1]:2525"]
tls = "opportunistic"
retry_max_s = 120

[[delivery.route]]
name = "svc"
tenants = ["payroll"]
backend = "maildir"
maildir_root = "/srv/mail"
verify_unreachable = "defer"
)");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_TRUE(config->default_route);
  EXPECT_EQ(config->delivery.targets, std::vector<std::string>{"127.0.0.1:24"});
  ASSERT_EQ(config->routes.size(), 2u);
  const RouteConfig& staff = config->routes[0];
  EXPECT_EQ(staff.name, "staff");
  EXPECT_EQ(staff.domains, (std::vector<std::string>{"contoso.test", "fabrikam.test"}));
  EXPECT_EQ(staff.delivery.backend, DeliveryBackend::kSmtp);
  EXPECT_EQ(staff.delivery.targets, (std::vector<std::string>{"127.0.0.1:2525", "[::1]:2525"}));
  EXPECT_EQ(staff.delivery.retry_initial_s, 30);  // inherited
  EXPECT_EQ(staff.delivery.retry_max_s, 120);     // its own
  EXPECT_TRUE(staff.delivery.verify_recipients);  // inherited
  EXPECT_EQ(staff.delivery.tls, DeliveryTls::kOpportunistic);
  EXPECT_EQ(staff.delivery.tls_server_name, "");  // never inherited
  const RouteConfig& svc = config->routes[1];
  EXPECT_EQ(svc.tenants, std::vector<std::string>{"payroll"});
  EXPECT_EQ(svc.delivery.backend, DeliveryBackend::kMaildir);
  EXPECT_EQ(svc.delivery.maildir_root, "/srv/mail");
  EXPECT_EQ(svc.delivery.verify_unreachable, VerifyUnreachable::kDefer);
  EXPECT_TRUE(svc.delivery.targets.empty());
}

TEST(ConfigTest, RouteErrorsNameTheRouteKey) {
  const std::string route = "[[delivery.route]]\n";
  EXPECT_TRUE(absl::StrContains(ErrorOf(route + "domains = [\"a.test\"]\nbackend = \"maildir\"\n"),
                                "delivery.route.name: a route needs a name"));
  EXPECT_TRUE(absl::StrContains(
      ErrorOf(route + "name = \"Staff\"\ndomains = [\"a.test\"]\nbackend = \"maildir\"\n"),
      "is not a route name"));
  EXPECT_TRUE(absl::StrContains(
      ErrorOf(route + "name = \"default\"\ndomains = [\"a.test\"]\nbackend = \"maildir\"\n"),
      "\"default\" is the route [delivery] describes"));
  EXPECT_TRUE(absl::StrContains(ErrorOf(route + "name = \"a\"\nbackend = \"maildir\"\n"),
                                "a route needs domains or tenants"));
  EXPECT_TRUE(absl::StrContains(ErrorOf(route + "name = \"a\"\ndomains = [\"a.test\"]\n"),
                                "delivery.route.backend: a route needs backend"));
  EXPECT_TRUE(absl::StrContains(
      ErrorOf(route + "name = \"a\"\ndomains = [\"a.test\"]\nbackend = \"smtp\"\n"),
      "need target"));
  EXPECT_TRUE(
      absl::StrContains(ErrorOf(route + "name = \"a\"\ndomains = [\"a.test\"]\nbackend = \"smtp\"\n"
                                        "targets = [\"mail.example:25\"]\n"),
                        "expected \"a.b.c.d:port\""));
  EXPECT_TRUE(absl::StrContains(
      ErrorOf(route + "name = \"a\"\ndomains = [\"a_b\"]\nbackend = \"maildir\"\n"),
      "is not a domain name"));
  EXPECT_TRUE(absl::StrContains(
      ErrorOf(route + "name = \"a\"\ndomains = [\"a.test\"]\nbackend = \"maildir\"\nbogus = 1\n"),
      "unknown key 'delivery.route.bogus'"));
  EXPECT_TRUE(absl::StrContains(
      ErrorOf(route + "name = \"a\"\ndomains = [\"a.test\"]\nbackend = \"maildir\"\n" + route +
              "name = \"b\"\ndomains = [\"A.test\"]\nbackend = \"maildir\"\n"),
      "domain a.test is in route \"a\" and in route \"b\""));
  EXPECT_TRUE(
      absl::StrContains(ErrorOf(route + "name = \"a\"\ntenants = [\"t\"]\nbackend = \"maildir\"\n" +
                                route + "name = \"a\"\ntenants = [\"u\"]\nbackend = \"maildir\"\n"),
                        "name \"a\" is given to two routes"));
  EXPECT_TRUE(absl::StrContains(ErrorOf("[delivery]\ndefault_route = false\n"),
                                "default_route = false needs at least one"));
  EXPECT_TRUE(
      absl::StrContains(ErrorOf("[delivery]\nbackend = \"smtp\"\ntarget = \"127.0.0.1:25\"\n"
                                "targets = [\"127.0.0.1:26\"]\n"),
                        "either target or targets"));
  EXPECT_TRUE(absl::StrContains(ErrorOf("[delivery]\nverify_unreachable = \"maybe\"\n"),
                                "is not one of \"accept\", \"defer\""));
}

TEST(ConfigTest, LoadConfigReadsAFileAndReportsMissingOnes) {
  char path[] = "/tmp/chute-config-XXXXXX";
  int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  close(fd);
  {
    std::ofstream out(path);
    out << "[server]\nhostname = \"from.file.test\"\n";
  }
  absl::StatusOr<Config> config = LoadConfig(path);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->server.hostname, "from.file.test");
  std::remove(path);
  EXPECT_EQ(LoadConfig(path).status().code(), absl::StatusCode::kNotFound);
}

TEST(ConfigTest, TheFleetTableIsOffByDefaultAndCheckedWhenOn) {
  absl::StatusOr<Config> config = Parse("");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->fleet.redis, "");
  EXPECT_EQ(config->fleet.lease_s, 30);
  config = Parse(
      "[fleet]\nnode_id = \"relay-1.dc2\"\nredis = \"unix:/run/redis/redis.sock\"\n"
      "lease_s = 9\nredis_timeout_ms = 3000\n");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->fleet.node_id, "relay-1.dc2");
  EXPECT_TRUE(Parse("[fleet]\nredis = \"10.0.0.5:6379\"\n").ok());
  EXPECT_TRUE(Parse("[fleet]\nredis = \"[::1]:6379\"\n").ok());
  EXPECT_THAT(ErrorOf("[fleet]\nredis = \"redis.example.test:6379\"\n"),
              testing::HasSubstr("test.toml:2: fleet.redis"));
  EXPECT_THAT(ErrorOf("[fleet]\nnode_id = \"a b\"\n"),
              testing::HasSubstr("test.toml:2: fleet.node_id"));
  // A renewal every third of the lease must fit an exchange's timeout.
  EXPECT_THAT(ErrorOf("[fleet]\nredis = \"unix:/r.sock\"\nlease_s = 3\nredis_timeout_ms = 1001\n"),
              testing::HasSubstr("fleet.redis_timeout_ms"));
  EXPECT_THAT(ErrorOf("[fleet]\nlease_s = 2\n"), testing::HasSubstr("test.toml:2: fleet.lease_s"));
  EXPECT_THAT(ErrorOf("[fleet]\nredis_host = \"x\"\n"), testing::HasSubstr("fleet.redis_host"));
}

}  // namespace
}  // namespace chute
