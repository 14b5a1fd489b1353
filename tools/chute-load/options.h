#pragma once

// Options: chute-load's command line, parsed and checked (ParseOptions), and the pieces the
// engine needs from it: message sizes (a fixed size or a weighted distribution), recipient
// address templates, the target address check (loopback only unless --allow-remote).
// Pure functions; any thread.

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "base/net_address.h"

namespace chute::load {

// Limits of the generator itself (every one named; the help text quotes them).
inline constexpr int kConnectionsMax = 100000;
inline constexpr int kThreadsMax = 256;
inline constexpr int kRcptsMax = 1000;
inline constexpr uint64_t kMessageBytesMax = 64ull << 20;  // 64 MiB, above any relay limit
inline constexpr double kDurationMaxS = 24 * 3600;
inline constexpr double kDefaultDurationS = 60;  // when neither --messages nor --duration
inline constexpr size_t kSizeDistEntriesMax = 32;
inline constexpr size_t kSecretBytesMax = 64 * 1024;
// kDefaultErrorsMax: a run whose target keeps failing (a wrong password, a full disk) stops
// after this many errors instead of reconnecting into the failure until its end time.
inline constexpr uint64_t kDefaultErrorsMax = 100;

enum class TlsMode { kNone, kStartTls, kImplicit };
enum class AuthMech { kNone, kPlain, kLogin, kXoauth2 };
enum class Scenario { kPersistent, kReconnect, kBurst, kIdle, kCaps };

struct SizeBucket {
  uint64_t bytes = 0;
  uint32_t weight = 0;
};

struct Options {
  HostPort target;
  std::string target_text;
  Scenario scenario = Scenario::kPersistent;
  TlsMode tls = TlsMode::kNone;
  AuthMech auth = AuthMech::kNone;
  std::string user;
  std::string secret;  // the password or the bearer token, read from its file
  std::string from = "app@example.test";
  std::vector<std::string> to;  // templates; "{n}" expands to a counter
  std::string ehlo = "chute-load.localdomain";
  int connections = 1;
  uint64_t messages = 0;                 // 0 = bounded by duration only
  uint64_t messages_per_connection = 0;  // 0 = unlimited (persistent)
  double duration_s = 0;                 // 0 = bounded by messages only
  double rate_per_s = 0;                 // 0 = closed loop (as fast as possible)
  std::vector<SizeBucket> sizes;         // at least one
  int rcpts = 1;
  int threads = 0;  // 0 = online CPUs
  bool bdat = false;
  bool pipelining = true;
  bool json = false;
  bool allow_remote = false;
  bool progress = true;  // only on a terminal
  int server_pid = 0;    // idle: measure this process's memory
  int ip_cap = 100;      // caps: the expected caps
  int tenant_cap = 250;
  double timeout_s = 30;                    // per reply / handshake
  double hold_s = 1;                        // idle: how long to hold the sessions once open
  uint64_t errors_max = kDefaultErrorsMax;  // the run stops early after this many errors
};

// ParseOptions: argv[1..] into Options. InvalidArgument naming the flag on any bad value;
// NotFound("help") for --help (the caller prints Usage()).
absl::StatusOr<Options> ParseOptions(const std::vector<std::string>& args);

// Usage: the --help text.
const char* Usage();

// ParseBytes: "512", "10k", "1m", "2M" (k = 1024). InvalidArgument otherwise.
absl::StatusOr<uint64_t> ParseBytes(absl::string_view text);
// ParseSizeDist: "1k:60,10k:30,1m:10".
absl::StatusOr<std::vector<SizeBucket>> ParseSizeDist(absl::string_view text);
// PickSize: the size for a uniform draw `u` in [0, 1) over the weighted buckets.
uint64_t PickSize(const std::vector<SizeBucket>& sizes, double u);

// ExpandAddress: `pattern` with every "{n}" replaced by `counter`.
std::string ExpandAddress(absl::string_view pattern, uint64_t counter);

// TargetAllowed: whether chute-load may send to `ip` without --allow-remote: loopback only
// (127.0.0.0/8, ::1, ::ffff:127.0.0.0/104).
bool TargetAllowed(const IpBytes& ip);

const char* ScenarioName(Scenario scenario);

}  // namespace chute::load
