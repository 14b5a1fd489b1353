// config.cc: loads and range-checks the TOML configuration, naming file, line and key on error.

#include "base/config.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/status_macros.h"

// toml++ is used header-only and without exceptions: parse errors come back as values.
#define TOML_HEADER_ONLY 1
#define TOML_EXCEPTIONS 0
#include <toml++/toml.h>

namespace chute {
namespace {

// Debian's abseil has its own string_view; toml++ speaks std::string_view.
std::string_view Std(absl::string_view text) { return {text.data(), text.size()}; }
absl::string_view Absl(std::string_view text) { return {text.data(), text.size()}; }

constexpr int64_t kShardsMax = 256;
constexpr int64_t kPathBytesMax = 4096;
constexpr int64_t kHostnameBytesMax = 253;
constexpr int64_t kListenersMax = 64;
constexpr int64_t kCidrsPerListMax = 1024;
// Pins name the keys a smarthost may have: its current one and one or two it rotates to.
constexpr int64_t kTlsPinsMax = 16;
constexpr size_t kConfigFileBytesMax = 1 << 20;

// TableReader: reads the keys of one TOML table into typed fields, remembering the first
// error, and at Finish() reports any key that nothing asked for. One per table.
class TableReader {
 public:
  TableReader(const toml::table& table, std::string table_name, absl::string_view source)
      : table_(table), name_(std::move(table_name)), source_(source) {}

  void Int(absl::string_view key, int64_t min, int64_t max, int64_t* out) {
    const toml::node* node = Take(key);
    if (node == nullptr) {
      return;
    }
    std::optional<int64_t> value = node->value_exact<int64_t>();
    if (!value.has_value()) {
      Fail(*node, key, "expected an integer");
    } else if (*value < min || *value > max) {
      Fail(*node, key, absl::StrCat(*value, " is out of range ", min, "..", max));
    } else {
      *out = *value;
    }
  }

  void Bool(absl::string_view key, bool* out) {
    const toml::node* node = Take(key);
    if (node == nullptr) {
      return;
    }
    std::optional<bool> value = node->value_exact<bool>();
    if (!value.has_value()) {
      Fail(*node, key, "expected true or false");
    } else {
      *out = *value;
    }
  }

  // String: `allow_empty` false rejects "". Values longer than kPathBytesMax are rejected.
  void String(absl::string_view key, bool allow_empty, std::string* out) {
    const toml::node* node = Take(key);
    if (node == nullptr) {
      return;
    }
    std::optional<std::string> value = node->value_exact<std::string>();
    if (!value.has_value()) {
      Fail(*node, key, "expected a string");
    } else if (!allow_empty && value->empty()) {
      Fail(*node, key, "must not be empty");
    } else if (static_cast<int64_t>(value->size()) > kPathBytesMax) {
      Fail(*node, key, absl::StrCat("longer than ", kPathBytesMax, " bytes"));
    } else if (value->find('\0') != std::string::npos) {
      Fail(*node, key, "contains a NUL byte");
    } else {
      *out = std::move(*value);
    }
  }

  // Enum: the string value must be one of `names`; stores its index.
  template <typename E>
  void Enum(absl::string_view key, std::initializer_list<std::pair<absl::string_view, E>> names,
            E* out) {
    std::string text;
    const toml::node* node = table_.get(Std(key));
    String(key, true, &text);
    if (node == nullptr || !ok()) {
      return;
    }
    std::vector<std::string> quoted;
    for (const auto& [name, value] : names) {
      if (name == text) {
        *out = value;
        return;
      }
      quoted.push_back(absl::StrCat("\"", name, "\""));
    }
    Fail(*node, key, absl::StrCat("\"", text, "\" is not one of ", absl::StrJoin(quoted, ", ")));
  }

  void CidrList(absl::string_view key, std::vector<Cidr>* out) {
    const toml::node* node = Take(key);
    if (node == nullptr) {
      return;
    }
    const toml::array* array = node->as_array();
    if (array == nullptr) {
      Fail(*node, key, "expected an array of CIDR strings");
      return;
    }
    if (static_cast<int64_t>(array->size()) > kCidrsPerListMax) {
      Fail(*node, key, absl::StrCat("more than ", kCidrsPerListMax, " entries"));
      return;
    }
    out->clear();
    for (const toml::node& element : *array) {
      std::optional<std::string> text = element.value_exact<std::string>();
      if (!text.has_value()) {
        Fail(element, key, "expected an array of CIDR strings");
        return;
      }
      absl::StatusOr<Cidr> cidr = ParseCidr(*text);
      if (!cidr.ok()) {
        Fail(element, key, cidr.status().message());
        return;
      }
      out->push_back(*cidr);
    }
  }

  void PinList(absl::string_view key, std::vector<TlsPin>* out) {
    const toml::node* node = Take(key);
    if (node == nullptr) {
      return;
    }
    const toml::array* array = node->as_array();
    if (array == nullptr) {
      Fail(*node, key, "expected an array of \"sha256/...\" strings");
      return;
    }
    if (static_cast<int64_t>(array->size()) > kTlsPinsMax) {
      Fail(*node, key, absl::StrCat("more than ", kTlsPinsMax, " entries"));
      return;
    }
    out->clear();
    for (const toml::node& element : *array) {
      std::optional<std::string> text = element.value_exact<std::string>();
      if (!text.has_value()) {
        Fail(element, key, "expected an array of \"sha256/...\" strings");
        return;
      }
      absl::StatusOr<TlsPin> pin = ParseTlsPin(*text);
      if (!pin.ok()) {
        Fail(element, key, absl::StrCat("\"", *text, "\": ", pin.status().message()));
        return;
      }
      out->push_back(*pin);
    }
  }

  // StringList: an array of non-empty strings, each at most kPathBytesMax bytes, at most
  // `max_entries` of them.
  void StringList(absl::string_view key, int64_t max_entries, std::vector<std::string>* out) {
    const toml::node* node = Take(key);
    if (node == nullptr) {
      return;
    }
    const toml::array* array = node->as_array();
    if (array == nullptr) {
      Fail(*node, key, "expected an array of strings");
      return;
    }
    if (static_cast<int64_t>(array->size()) > max_entries) {
      Fail(*node, key, absl::StrCat("more than ", max_entries, " entries"));
      return;
    }
    out->clear();
    for (const toml::node& element : *array) {
      std::optional<std::string> text = element.value_exact<std::string>();
      if (!text.has_value() || text->empty() || text->find('\0') != std::string::npos ||
          static_cast<int64_t>(text->size()) > kPathBytesMax) {
        Fail(element, key, "expected an array of non-empty strings");
        return;
      }
      out->push_back(std::move(*text));
    }
  }

  // Node: the value of `key` (null when absent), which the caller reads itself.
  const toml::node* Node(absl::string_view key) { return Take(key); }

  // FailAt: reports an error about `key` at `node`.
  void FailAt(const toml::node& node, absl::string_view key, absl::string_view why) {
    Fail(node, key, why);
  }

  // Has: whether the table sets `key` at all.
  bool Has(absl::string_view key) const { return table_.get(Std(key)) != nullptr; }

  // Check: reports an error about `key` (which must be present) when `condition` is false.
  void Check(bool condition, absl::string_view key, absl::string_view why) {
    if (!condition && ok()) {
      const toml::node* node = table_.get(Std(key));
      Fail(node != nullptr ? *node : static_cast<const toml::node&>(table_), key, why);
    }
  }

  bool ok() const { return status_.ok(); }

  // Finish: the first error, else an error for the first key nothing asked for.
  absl::Status Finish() {
    if (!ok()) {
      return status_;
    }
    for (const auto& [key, node] : table_) {
      if (!taken_.contains(Absl(key.str()))) {
        return absl::InvalidArgumentError(
            absl::StrCat(Where(node), "unknown key '", Qualified(Absl(key.str())), "'"));
      }
    }
    return absl::OkStatus();
  }

 private:
  const toml::node* Take(absl::string_view key) {
    taken_.insert(std::string(key));
    return table_.get(Std(key));
  }

  std::string Where(const toml::node& node) const {
    return absl::StrCat(source_, ":", node.source().begin.line, ": ");
  }

  std::string Qualified(absl::string_view key) const {
    return name_.empty() ? std::string(key) : absl::StrCat(name_, ".", key);
  }

  void Fail(const toml::node& node, absl::string_view key, absl::string_view why) {
    if (ok()) {
      status_ = absl::InvalidArgumentError(absl::StrCat(Where(node), Qualified(key), ": ", why));
    }
  }

  const toml::table& table_;
  std::string name_;
  absl::string_view source_;
  absl::flat_hash_set<std::string> taken_;
  absl::Status status_;
};

bool IsHostname(absl::string_view name) {
  if (name.empty() || static_cast<int64_t>(name.size()) > kHostnameBytesMax) {
    return false;
  }
  for (char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '.';
    if (!ok) {
      return false;
    }
  }
  return name.front() != '.' && name.front() != '-' && name.find("..") == absl::string_view::npos;
}

// SubTable: the table under `key`, an empty table when absent, or an error when `key` holds
// something else.
absl::StatusOr<const toml::table*> SubTable(const toml::table& root, absl::string_view key,
                                            absl::string_view source) {
  static const toml::table kEmpty;
  const toml::node* node = root.get(Std(key));
  if (node == nullptr) {
    return &kEmpty;
  }
  if (!node->is_table()) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ":", node->source().begin.line, ": ", key, ": expected a table"));
  }
  return node->as_table();
}

absl::Status ReadServer(const toml::table& table, absl::string_view source, ServerConfig* out) {
  TableReader r(table, "server", source);
  r.String("hostname", false, &out->hostname);
  r.Check(IsHostname(out->hostname), "hostname", "not a valid host name");
  r.Int("shards", 0, kShardsMax, &out->shards);
  r.String("data_dir", false, &out->data_dir);
  r.Int("recv_buffers", 64, 32768, &out->recv_buffers);
  r.Check((out->recv_buffers & (out->recv_buffers - 1)) == 0, "recv_buffers",
          "must be a power of two");
  r.Int("recv_buffer_bytes", 4096, 1 << 20, &out->recv_buffer_bytes);
  r.Int("delivery_threads", 1, 64, &out->delivery_threads);
  r.Int("delivery_io_threads", 1, 64, &out->delivery_io_threads);
  return r.Finish();
}

absl::Status ReadListener(const toml::table& table, absl::string_view source, ListenerConfig* out) {
  TableReader r(table, "listener", source);
  r.String("address", false, &out->address);
  if (r.ok()) {
    absl::StatusOr<HostPort> host_port = ParseHostPort(out->address);
    r.Check(host_port.ok(), "address", host_port.status().message());
    if (host_port.ok()) {
      out->host_port = *host_port;
    }
  }
  r.Enum<TlsMode>("tls",
                  {{"starttls", TlsMode::kStartTls},
                   {"implicit", TlsMode::kImplicit},
                   {"none", TlsMode::kNone}},
                  &out->tls);
  r.CidrList("allowed_networks", &out->allowed_networks);
  r.String("authenticate_as", true, &out->authenticate_as);
  r.Bool("proxy_protocol", &out->proxy_protocol);
  r.Enum<bool>("bare_lf", {{"reject", false}, {"normalize", true}}, &out->bare_lf_normalize);
  r.CidrList("trusted_proxies", &out->trusted_proxies);
  bool trusted = out->tls == TlsMode::kNone;
  r.Check(trusted || out->allowed_networks.empty(), "allowed_networks",
          "only a listener with tls = \"none\" takes allowed_networks");
  r.Check(trusted || out->authenticate_as.empty(), "authenticate_as",
          "only a listener with tls = \"none\" takes authenticate_as");
  r.Check(!trusted || !out->allowed_networks.empty(), "tls",
          "a listener with tls = \"none\" needs allowed_networks (the CIDRs that may connect)");
  r.Check(!trusted || !out->authenticate_as.empty(), "tls",
          "a listener with tls = \"none\" needs authenticate_as (the account its sessions use)");
  r.Check(!out->proxy_protocol || !out->trusted_proxies.empty(), "proxy_protocol",
          "proxy_protocol = true needs trusted_proxies");
  return r.Finish();
}

absl::Status ReadListeners(const toml::table& root, absl::string_view source,
                           std::vector<ListenerConfig>* out) {
  const toml::node* node = root.get("listener");
  if (node == nullptr) {
    out->push_back(ListenerConfig{});
    RETURN_IF_ERROR(ParseHostPort(out->back().address).status());
    out->back().host_port = *ParseHostPort(out->back().address);
    return absl::OkStatus();
  }
  const toml::array* array = node->as_array();
  if (array == nullptr || !array->is_array_of_tables()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ":", node->source().begin.line,
                                                   ": listener: expected [[listener]] tables"));
  }
  if (static_cast<int64_t>(array->size()) > kListenersMax) {
    return absl::InvalidArgumentError(absl::StrCat(source, ":", node->source().begin.line,
                                                   ": more than ", kListenersMax, " listeners"));
  }
  for (const toml::node& element : *array) {
    ListenerConfig listener;
    RETURN_IF_ERROR(ReadListener(*element.as_table(), source, &listener));
    out->push_back(std::move(listener));
  }
  return absl::OkStatus();
}

absl::Status ReadTls(const toml::table& table, absl::string_view source, TlsConfig* out) {
  TableReader r(table, "tls", source);
  r.String("certificate", false, &out->certificate);
  r.String("private_key", false, &out->private_key);
  return r.Finish();
}

absl::Status ReadLimits(const toml::table& table, absl::string_view source, LimitsConfig* out) {
  TableReader r(table, "limits", source);
  r.Int("connections_max", 1, 10'000'000, &out->connections_max);
  // The connection gate counts up to 65535 per address or tenant (16 bits of its words).
  r.Int("connections_per_ip", 1, 65535, &out->connections_per_ip);
  r.CidrList("connections_per_ip_exempt", &out->connections_per_ip_exempt);
  // Shorter than a /48 (a whole site's allocation) would put unrelated clients together.
  r.Int("connections_per_ip_ipv6_prefix_bits", 48, 128, &out->connections_per_ip_ipv6_prefix_bits);
  r.Int("ip_table_slots", 1024, 1 << 24, &out->ip_table_slots);
  r.Int("authenticated_connections_per_tenant", 1, 65535,
        &out->authenticated_connections_per_tenant);
  r.Int("recipients_per_message", 1, 1000, &out->recipients_per_message);
  r.Int("message_size_bytes", 1024, 1 << 30, &out->message_size_bytes);
  r.Int("receiving_bytes_max", int64_t{1} << 20, int64_t{1} << 40, &out->receiving_bytes_max);
  r.Int("accounts_per_tenant", 1, 100'000, &out->accounts_per_tenant);
  r.Int("command_timeout_s", 1, 3600, &out->command_timeout_s);
  r.Int("first_command_timeout_s", 1, 3600, &out->first_command_timeout_s);
  r.Int("data_rate_min_bytes_per_s", 0, 1 << 30, &out->data_rate_min_bytes_per_s);
  r.Int("data_timeout_s", 1, 3600, &out->data_timeout_s);
  r.Int("session_timeout_s", 1, 86400, &out->session_timeout_s);
  r.Int("errors_per_session", 1, 1000, &out->errors_per_session);
  r.Int("auth_failures_per_session", 1, 100, &out->auth_failures_per_session);
  r.Int("auth_failures_per_ip", 1, 1'000'000, &out->auth_failures_per_ip);
  r.Int("auth_failures_per_account", 1, 1'000'000, &out->auth_failures_per_account);
  r.Int("auth_failed_users_per_ip", 1, 1'000'000, &out->auth_failed_users_per_ip);
  r.CidrList("auth_throttle_exempt", &out->auth_throttle_exempt);
  r.Int("auth_failure_window_s", 1, 86400, &out->auth_failure_window_s);
  r.Int("auth_failure_delay_max_s", 0, 60, &out->auth_failure_delay_max_s);
  r.Int("auth_cache_entries", 0, 1'000'000, &out->auth_cache_entries);
  r.Check(out->connections_per_ip <= out->connections_max, "connections_per_ip",
          "must not exceed connections_max");
  r.Check(out->receiving_bytes_max >= out->message_size_bytes, "receiving_bytes_max",
          "must be at least message_size_bytes (else no message of the largest size fits)");
  return r.Finish();
}

absl::Status ReadSpool(const toml::table& table, absl::string_view source, SpoolConfig* out) {
  TableReader r(table, "spool", source);
  r.String("dir", true, &out->dir);
  r.Int("group_commit_delay_us", 0, 100'000, &out->group_commit_delay_us);
  r.Int("bytes_max", int64_t{1} << 20, int64_t{1} << 40, &out->bytes_max);
  r.Int("messages_max", 16, 10'000'000, &out->messages_max);
  r.Int("segment_bytes", int64_t{1} << 20, int64_t{1} << 32, &out->segment_bytes);
  return r.Finish();
}

constexpr int64_t kRoutesMax = 256;
constexpr int64_t kRouteTargetsMax = 16;
constexpr int64_t kRouteNamesMax = 4096;  // domains or tenants one route lists
constexpr size_t kRouteNameBytesMax = 32;

bool IsRouteName(absl::string_view name) {
  if (name.empty() || name.size() > kRouteNameBytesMax) {
    return false;
  }
  for (size_t i = 0; i < name.size(); ++i) {
    char c = name[i];
    bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || (i > 0 && (c == '-' || c == '_'));
    if (!ok) {
      return false;
    }
  }
  return true;
}

// CheckDeliveryTls: the keys saying how the target's certificate is verified fit `tls` and
// the targets (docs/configuration.md, [delivery]).
void CheckDeliveryTls(TableReader& r, DeliveryConfig* out) {
  const std::string& name = out->tls_server_name;
  r.Check(name.empty() || IsHostname(name) || ParseIp(name).ok(), "tls_server_name",
          "expected a DNS name or an IP address");
  for (absl::string_view key : {"tls_ca_file", "tls_server_name", "tls_pins"}) {
    r.Check(out->tls != DeliveryTls::kOff || !r.Has(key), key,
            "tls = \"off\" verifies no certificate; remove the key or turn tls on");
  }
  r.Check(out->tls_pins.empty() || out->tls == DeliveryTls::kRequired, "tls_pins",
          "pins are enforced only with tls = \"required\" (opportunistic TLS accepts any "
          "certificate)");
  bool unix_target = std::any_of(out->targets.begin(), out->targets.end(),
                                 [](const std::string& t) { return t.starts_with("unix:"); });
  r.Check(out->tls != DeliveryTls::kRequired || !unix_target || !name.empty(), "tls",
          "tls = \"required\" with a unix: target needs tls_server_name (the name the "
          "certificate must carry)");
}

// CheckRoutes: no two routes share a name, a domain or a tenant.
absl::Status CheckRoutes(const std::vector<RouteConfig>& routes, absl::string_view source) {
  absl::flat_hash_map<std::string, std::string> domains;
  absl::flat_hash_map<std::string, std::string> tenants;
  absl::flat_hash_set<std::string> names;
  for (const RouteConfig& route : routes) {
    if (!names.insert(route.name).second) {
      return absl::InvalidArgumentError(absl::StrCat(source, ": [[delivery.route]] name \"",
                                                     route.name, "\" is given to two routes"));
    }
    for (const std::string& domain : route.domains) {
      auto [it, inserted] = domains.try_emplace(domain, route.name);
      if (!inserted) {
        return absl::InvalidArgumentError(absl::StrCat(source, ": [[delivery.route]] domain ",
                                                       domain, " is in route \"", it->second,
                                                       "\" and in route \"", route.name, "\""));
      }
    }
    for (const std::string& tenant : route.tenants) {
      auto [it, inserted] = tenants.try_emplace(tenant, route.name);
      if (!inserted) {
        return absl::InvalidArgumentError(absl::StrCat(source, ": [[delivery.route]] tenant ",
                                                       tenant, " is in route \"", it->second,
                                                       "\" and in route \"", route.name, "\""));
      }
    }
  }
  return absl::OkStatus();
}

void ReadDeliverySettings(TableReader& r, bool route, DeliveryConfig* out);
absl::Status ReadRoute(const toml::table& table, absl::string_view source,
                       const DeliveryConfig& defaults, RouteConfig* out);

absl::Status ReadDelivery(const toml::table& table, absl::string_view source, DeliveryConfig* out,
                          bool* default_route, std::vector<RouteConfig>* routes) {
  TableReader r(table, "delivery", source);
  ReadDeliverySettings(r, /*route=*/false, out);
  r.Bool("default_route", default_route);
  const toml::node* node = r.Node("route");
  if (node != nullptr) {
    const toml::array* array = node->as_array();
    if (array == nullptr || !array->is_array_of_tables()) {
      r.FailAt(*node, "route", "expected [[delivery.route]] tables");
    } else if (static_cast<int64_t>(array->size()) > kRoutesMax) {
      r.FailAt(*node, "route", absl::StrCat("more than ", kRoutesMax, " routes"));
    } else {
      RETURN_IF_ERROR(r.Finish());
      for (const toml::node& element : *array) {
        RouteConfig& route = routes->emplace_back();
        RETURN_IF_ERROR(ReadRoute(*element.as_table(), source, *out, &route));
      }
      RETURN_IF_ERROR(CheckRoutes(*routes, source));
    }
  }
  r.Check(*default_route || !routes->empty(), "default_route",
          "default_route = false needs at least one [[delivery.route]]");
  return r.Finish();
}

// ReadDeliverySettings: the keys [delivery] and [[delivery.route]] share, over `out` (for a
// route: a copy of [delivery] without what a route never inherits).
void ReadDeliverySettings(TableReader& r, bool route, DeliveryConfig* out) {
  if (route) {
    r.Check(r.Has("backend"), "backend",
            "a route needs backend (\"maildir\", \"lmtp\" or \"smtp\")");
  }
  r.Enum<DeliveryBackend>("backend",
                          {{"maildir", DeliveryBackend::kMaildir},
                           {"lmtp", DeliveryBackend::kLmtp},
                           {"smtp", DeliveryBackend::kSmtp}},
                          &out->backend);
  r.String("maildir_root", true, &out->maildir_root);
  r.Check(!r.Has("target") || !r.Has("targets"), "targets",
          "give either target or targets, not both");
  std::string target;
  r.String("target", true, &target);
  if (!target.empty()) {
    out->targets = {target};
  }
  r.StringList("targets", kRouteTargetsMax, &out->targets);
  r.Int("batch_messages_max", 1, 4096, &out->batch_messages_max);
  r.Int("batch_delay_ms", 0, 1000, &out->batch_delay_ms);
  r.Int("retry_initial_s", 1, 86400, &out->retry_initial_s);
  r.Int("retry_max_s", 1, 7 * 86400, &out->retry_max_s);
  r.Int("give_up_after_s", 60, 30 * 86400, &out->give_up_after_s);
  r.Int("delay_notice_after_s", 0, 30 * 86400, &out->delay_notice_after_s);
  r.Enum<DeliveryTls>("tls",
                      {{"off", DeliveryTls::kOff},
                       {"opportunistic", DeliveryTls::kOpportunistic},
                       {"required", DeliveryTls::kRequired}},
                      &out->tls);
  r.String("tls_ca_file", false, &out->tls_ca_file);
  r.String("tls_server_name", true, &out->tls_server_name);
  r.PinList("tls_pins", &out->tls_pins);
  CheckDeliveryTls(r, out);
  r.Int("connections_max", 1, 1024, &out->connections_max);
  r.Int("messages_per_connection_max", 1, 1'000'000, &out->messages_per_connection_max);
  r.Int("connection_idle_s", 1, 3600, &out->connection_idle_s);
  r.Int("timeout_s", 1, 3600, &out->timeout_s);
  r.Bool("verify_recipients", &out->verify_recipients);
  r.Enum<VerifyUnreachable>(
      "verify_unreachable",
      {{"accept", VerifyUnreachable::kAccept}, {"defer", VerifyUnreachable::kDefer}},
      &out->verify_unreachable);
  r.Int("verify_positive_s", 1, 30 * 86400, &out->verify_positive_s);
  r.Int("verify_negative_s", 1, 30 * 86400, &out->verify_negative_s);
  r.Int("verify_timeout_s", 1, 60, &out->verify_timeout_s);
  r.Check(out->retry_initial_s <= out->retry_max_s, "retry_max_s",
          "must not be below retry_initial_s");
  r.Check(out->backend == DeliveryBackend::kMaildir || !out->targets.empty(), "backend",
          "the lmtp and smtp backends need target (\"host:port\" or \"unix:/path\") or "
          "targets (several, preferred first)");
  r.Check(out->backend != DeliveryBackend::kMaildir || out->targets.empty() || !route, "targets",
          "the maildir backend has no targets (it writes under maildir_root)");
  for (const std::string& t : out->targets) {
    if (!t.starts_with("unix:")) {
      r.Check(
          ParseHostPort(t).ok(), r.Has("targets") ? "targets" : "target",
          absl::StrCat("\"", t, "\": expected \"a.b.c.d:port\", \"[v6]:port\" or \"unix:/path\""));
    }
  }
}

// ReadRoute: one [[delivery.route]] table, starting from `defaults` ([delivery]'s settings).
absl::Status ReadRoute(const toml::table& table, absl::string_view source,
                       const DeliveryConfig& defaults, RouteConfig* out) {
  TableReader r(table, "delivery.route", source);
  r.String("name", false, &out->name);
  r.Check(r.Has("name"), "name", "a route needs a name");
  r.Check(
      IsRouteName(out->name), "name",
      absl::StrCat("\"", out->name, "\" is not a route name (lower-case letters, digits, - and _, ",
                   "at most ", kRouteNameBytesMax, " bytes)"));
  r.Check(out->name != kDefaultRouteName, "name",
          "\"default\" is the route [delivery] describes; give this route another name");
  r.StringList("domains", kRouteNamesMax, &out->domains);
  r.StringList("tenants", kRouteNamesMax, &out->tenants);
  for (std::string& domain : out->domains) {
    domain = absl::AsciiStrToLower(domain);
    r.Check(IsHostname(domain) && domain.find('.') != std::string::npos, "domains",
            absl::StrCat("\"", domain, "\" is not a domain name (A-labels: xn--... for IDNs)"));
  }
  r.Check(!out->domains.empty() || !out->tenants.empty(), "name",
          "a route needs domains or tenants (the recipients it serves)");
  out->delivery = defaults;
  out->delivery.targets.clear();
  out->delivery.tls_server_name.clear();
  out->delivery.tls_pins.clear();
  ReadDeliverySettings(r, /*route=*/true, &out->delivery);
  return r.Finish();
}

absl::Status ReadDirectory(const toml::table& table, absl::string_view source,
                           DirectoryConfig* out) {
  TableReader r(table, "directory", source);
  r.String("database", true, &out->database);
  return r.Finish();
}

absl::Status ReadPasswords(const toml::table& table, absl::string_view source,
                           PasswordsConfig* out) {
  TableReader r(table, "passwords", source);
  r.Int("argon2_memory_kib", 8192, 4 << 20, &out->argon2_memory_kib);
  r.Int("argon2_passes", 1, 100, &out->argon2_passes);
  r.Int("argon2_lanes", 1, 64, &out->argon2_lanes);
  return r.Finish();
}

absl::Status ReadAdmin(const toml::table& table, absl::string_view source, AdminConfig* out) {
  TableReader r(table, "admin", source);
  r.String("address", true, &out->address);
  r.String("socket", true, &out->socket);
  r.String("token_file", true, &out->token_file);
  r.String("metrics_token_file", true, &out->metrics_token_file);
  r.Bool("metrics_open", &out->metrics_open);
  if (r.ok() && !out->address.empty()) {
    absl::StatusOr<HostPort> host_port = ParseHostPort(out->address);
    r.Check(host_port.ok(), "address", host_port.status().message());
    // The listener speaks plain HTTP and its requests carry the admin token: off loopback,
    // anyone on the path could read the token and then the queue.
    r.Check(!host_port.ok() || IsLoopback(host_port->ip), "address",
            absl::StrCat(out->address,
                         " is not a loopback address; the admin listener speaks plain HTTP and "
                         "its requests carry the admin token, so it listens on 127.0.0.0/8 or "
                         "[::1] only: reach it from elsewhere through SSH (ssh -L 9587:",
                         out->address, " host) or a TLS-terminating proxy on this machine"));
  }
  r.Check(out->socket.size() < 4096, "socket", "is too long");
  return r.Finish();
}

absl::Status ReadLog(const toml::table& table, absl::string_view source, LogConfig* out) {
  TableReader r(table, "log", source);
  r.Bool("json", &out->json);
  return r.Finish();
}

absl::Status ReadTrace(const toml::table& table, absl::string_view source, TraceConfig* out) {
  TableReader r(table, "trace", source);
  r.Int("retention_days", 1, 3650, &out->retention_days);
  return r.Finish();
}

absl::Status ReadOAuth(const toml::table& table, absl::string_view source, OAuthConfig* out) {
  TableReader r(table, "oauth", source);
  r.String("ca_file", false, &out->ca_file);
  r.Int("refresh_s", 10, 604800, &out->refresh_s);
  r.Int("fetch_interval_min_s", 1, 3600, &out->fetch_interval_min_s);
  r.Int("fetch_timeout_s", 1, 120, &out->fetch_timeout_s);
  r.Int("keys_max_age_s", 3600, 31536000, &out->keys_max_age_s);
  r.Check(out->fetch_interval_min_s <= out->refresh_s, "fetch_interval_min_s",
          "is more than refresh_s");
  return r.Finish();
}

absl::Status ReadFleet(const toml::table& table, absl::string_view source, FleetConfig* out) {
  TableReader r(table, "fleet", source);
  r.String("node_id", true, &out->node_id);
  r.String("redis", true, &out->redis);
  r.String("redis_password_file", true, &out->redis_password_file);
  r.Int("lease_s", 3, 3600, &out->lease_s);
  r.Int("redis_timeout_ms", 10, 60000, &out->redis_timeout_ms);
  r.Check(out->node_id.size() <= 64 &&
              std::all_of(out->node_id.begin(), out->node_id.end(),
                          [](char c) {
                            return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '-' ||
                                   c == '_' || c == '.';
                          }),
          "node_id", "must be at most 64 letters, digits, '.', '-' or '_'");
  if (!out->redis.empty()) {
    bool unix_path = out->redis.starts_with("unix:/");
    r.Check(unix_path || ParseHostPort(out->redis).ok(), "redis",
            absl::StrCat("\"", out->redis,
                         "\": expected \"a.b.c.d:port\", \"[v6]:port\" or \"unix:/path\""));
    r.Check(out->redis_timeout_ms * 3 <= out->lease_s * 1000, "redis_timeout_ms",
            "must be at most a third of lease_s (a lease is renewed every third of it)");
  }
  return r.Finish();
}

// CheckDistinctAddresses: no two listeners, and not the admin listener and a listener, on one
// address. With SO_REUSEPORT both would bind, and connections would go to either at random.
absl::Status CheckDistinctAddresses(const Config& config, absl::string_view source) {
  auto same = [](const HostPort& a, const HostPort& b) { return a.ip == b.ip && a.port == b.port; };
  for (size_t i = 0; i < config.listeners.size(); ++i) {
    for (size_t j = 0; j < i; ++j) {
      if (same(config.listeners[i].host_port, config.listeners[j].host_port)) {
        return absl::InvalidArgumentError(absl::StrCat(
            source, ": [[listener]] address ", config.listeners[i].address, " is given twice"));
      }
    }
  }
  if (config.admin.address.empty()) {
    return absl::OkStatus();
  }
  absl::StatusOr<HostPort> admin = ParseHostPort(config.admin.address);
  for (const ListenerConfig& listener : config.listeners) {
    if (admin.ok() && same(*admin, listener.host_port)) {
      return absl::InvalidArgumentError(absl::StrCat(
          source, ": [admin] address ", config.admin.address, " is also a [[listener]] address"));
    }
  }
  return absl::OkStatus();
}

void ResolvePaths(Config* config) {
  const std::string& data_dir = config->server.data_dir;
  if (config->spool.dir.empty()) {
    config->spool.dir = absl::StrCat(data_dir, "/spool");
  }
  if (config->delivery.maildir_root.empty()) {
    config->delivery.maildir_root = absl::StrCat(data_dir, "/mail");
  }
  for (RouteConfig& route : config->routes) {
    if (route.delivery.maildir_root.empty()) {
      route.delivery.maildir_root = config->delivery.maildir_root;
    }
  }
  if (config->directory.database.empty()) {
    config->directory.database = absl::StrCat(data_dir, "/directory.db");
  }
  if (config->admin.socket.empty()) {
    config->admin.socket = absl::StrCat(data_dir, "/admin.sock");
  }
  if (config->admin.token_file.empty()) {
    config->admin.token_file = absl::StrCat(data_dir, "/admin.token");
  }
}

}  // namespace

absl::string_view TlsModeName(TlsMode mode) {
  switch (mode) {
    case TlsMode::kStartTls:
      return "starttls";
    case TlsMode::kImplicit:
      return "implicit";
    case TlsMode::kNone:
      return "none";
  }
  return "?";
}

absl::string_view DeliveryBackendName(DeliveryBackend backend) {
  switch (backend) {
    case DeliveryBackend::kMaildir:
      return "maildir";
    case DeliveryBackend::kLmtp:
      return "lmtp";
    case DeliveryBackend::kSmtp:
      return "smtp";
  }
  return "?";
}

absl::StatusOr<Config> ParseConfig(absl::string_view text, absl::string_view source_name) {
  toml::parse_result parsed = toml::parse(Std(text), Std(source_name));
  if (!parsed) {
    const toml::parse_error& error = parsed.error();
    return absl::InvalidArgumentError(
        absl::StrCat(source_name, ":", error.source().begin.line, ": ", Absl(error.description())));
  }
  const toml::table& root = parsed.table();
  Config config;
  static constexpr absl::string_view kTables[] = {
      "server",    "listener", "tls", "limits", "spool", "delivery", "directory",
      "passwords", "admin",    "log", "trace",  "oauth", "fleet"};
  for (const auto& [key, node] : root) {
    if (std::find(std::begin(kTables), std::end(kTables), Absl(key.str())) == std::end(kTables)) {
      return absl::InvalidArgumentError(absl::StrCat(source_name, ":", node.source().begin.line,
                                                     ": unknown key '", Absl(key.str()), "'"));
    }
  }
  const toml::table* table = nullptr;
  ASSIGN_OR_RETURN(table, SubTable(root, "server", source_name));
  RETURN_IF_ERROR(ReadServer(*table, source_name, &config.server));
  RETURN_IF_ERROR(ReadListeners(root, source_name, &config.listeners));
  ASSIGN_OR_RETURN(table, SubTable(root, "tls", source_name));
  RETURN_IF_ERROR(ReadTls(*table, source_name, &config.tls));
  ASSIGN_OR_RETURN(table, SubTable(root, "limits", source_name));
  RETURN_IF_ERROR(ReadLimits(*table, source_name, &config.limits));
  ASSIGN_OR_RETURN(table, SubTable(root, "spool", source_name));
  RETURN_IF_ERROR(ReadSpool(*table, source_name, &config.spool));
  ASSIGN_OR_RETURN(table, SubTable(root, "delivery", source_name));
  RETURN_IF_ERROR(
      ReadDelivery(*table, source_name, &config.delivery, &config.default_route, &config.routes));
  ASSIGN_OR_RETURN(table, SubTable(root, "directory", source_name));
  RETURN_IF_ERROR(ReadDirectory(*table, source_name, &config.directory));
  ASSIGN_OR_RETURN(table, SubTable(root, "passwords", source_name));
  RETURN_IF_ERROR(ReadPasswords(*table, source_name, &config.passwords));
  ASSIGN_OR_RETURN(table, SubTable(root, "admin", source_name));
  RETURN_IF_ERROR(ReadAdmin(*table, source_name, &config.admin));
  ASSIGN_OR_RETURN(table, SubTable(root, "log", source_name));
  RETURN_IF_ERROR(ReadLog(*table, source_name, &config.log));
  ASSIGN_OR_RETURN(table, SubTable(root, "trace", source_name));
  RETURN_IF_ERROR(ReadTrace(*table, source_name, &config.trace));
  ASSIGN_OR_RETURN(table, SubTable(root, "oauth", source_name));
  RETURN_IF_ERROR(ReadOAuth(*table, source_name, &config.oauth));
  ASSIGN_OR_RETURN(table, SubTable(root, "fleet", source_name));
  RETURN_IF_ERROR(ReadFleet(*table, source_name, &config.fleet));
  RETURN_IF_ERROR(CheckDistinctAddresses(config, source_name));
  ResolvePaths(&config);
  return config;
}

absl::StatusOr<Config> LoadConfig(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) {
    int error = errno;
    std::string message = absl::StrCat(path, ": cannot read: ", std::strerror(error));
    return error == ENOENT ? absl::NotFoundError(message) : absl::PermissionDeniedError(message);
  }
  std::string text;
  text.resize(kConfigFileBytesMax + 1);
  file.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<size_t>(file.gcount()));
  if (text.size() > kConfigFileBytesMax) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": larger than ", kConfigFileBytesMax, " bytes"));
  }
  return ParseConfig(text, path);
}

}  // namespace chute
