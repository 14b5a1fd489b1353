#pragma once

// KeyStore: each tenant's OAuth signing keys, kept current while chuted runs
// (docs/architecture.md, Auth; docs/operations.md, "OAuth key rotation").
//
// A tenant's keys come from one KeySource (its directory field oauth_jwks):
//   - a JWKS file: loaded when the source is set, and again whenever the file at the path
//     changes (another inode, size or modification time), without SIGHUP;
//   - a JWKS URL, or OpenID Connect discovery (the issuer's
//     /.well-known/openid-configuration names the jwks_uri, and must name the tenant's issuer
//     as its own): fetched over verified HTTPS on the store's own thread, again every
//     `refresh`, and as soon as a token names a key id the set does not have (a rotation the
//     schedule has not seen yet), but never more often than `fetch_interval_min` per tenant,
//     so that tokens with made-up key ids cannot make chuted hammer the identity provider.
//     Each fetched set is written to `cache_dir` (0600, atomically) and read back at start,
//     so that chuted restarted while the identity provider is unreachable still verifies
//     tokens; keys that could not be fetched again for `keys_max_age` are dropped.
// A fetch or a load that fails changes nothing: the keys in force stay, and the failure is
// logged with its reason and counted.
//
// Threads: Find() and KeyNotFound() from any thread, lock-free and non-blocking (the shards
// call them). SetSources() from one thread (the main thread, with each directory snapshot).
// The fetcher is the store's own thread between Start() and Stop(); RunOnce() is what it does
// on each wake, public for tests that drive the clock.

#include <sys/types.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "auth/jwt.h"
#include "net/https_get.h"

namespace chute::auth {

// The OpenID provider metadata document is read up to this size (Entra's: 1.7 KiB).
inline constexpr size_t kDiscoveryBytesMax = 64 * 1024;
inline constexpr absl::string_view kDiscoveryPath = "/.well-known/openid-configuration";
inline constexpr absl::string_view kDiscoveryWord = "discovery";
// A cache file holds one JWKS (kJwksBytesMax) as a JSON string, escaped: at most twice as long.
inline constexpr size_t kCacheBytesMax = 2 * kJwksBytesMax + 4096;

struct KeySource {
  enum class Kind { kNone, kFile, kUrl, kDiscovery };
  Kind kind = Kind::kNone;
  // kFile: an absolute path; kUrl: the JWKS URL; kDiscovery: the metadata URL.
  std::string location;
  bool operator==(const KeySource&) const = default;
};

// ParseKeySource: a tenant's oauth_jwks: "" (none), an absolute path, an https:// URL, or the
// word "discovery" (the metadata URL made from `issuer`, which must then be an https URL).
// InvalidArgument saying which forms there are otherwise.
absl::StatusOr<KeySource> ParseKeySource(absl::string_view text, absl::string_view issuer);
// DiscoveryUrl: the OpenID provider metadata URL of `issuer` (OpenID Connect Discovery 1.0
// §4: the issuer without a trailing "/", then kDiscoveryPath).
std::string DiscoveryUrl(absl::string_view issuer);
// JwksUriFromDiscovery: the jwks_uri of a metadata document, which must be a JSON object
// whose "issuer" is `issuer` exactly (Discovery §4.3) and whose jwks_uri is an https URL.
absl::StatusOr<std::string> JwksUriFromDiscovery(absl::string_view document,
                                                 absl::string_view issuer);

struct TenantKeySource {
  int64_t tenant_id = 0;
  std::string tenant_name;  // for log lines
  std::string issuer;       // what a discovery document must name
  KeySource source;
};

// Fetch: one GET; HttpsGet, or a test's stand-in.
using Fetch = std::function<absl::StatusOr<net::HttpResponse>(const net::HttpsUrl& url,
                                                              size_t body_bytes_max)>;

struct KeyStoreOptions {
  // cache_dir: where fetched key sets are kept, made 0700 when missing; "" = no cache.
  std::string cache_dir;
  absl::Duration refresh = absl::Hours(1);
  absl::Duration fetch_interval_min = absl::Seconds(60);
  // keys_max_age: fetched keys that could not be fetched again for this long are dropped
  // (and a cache this old is not used): a key the provider revoked stops verifying even
  // when the provider cannot be reached.
  absl::Duration keys_max_age = absl::Hours(7 * 24);
  // file_check_interval: how often a JWKS file is looked at for a change (one stat(2)).
  absl::Duration file_check_interval = absl::Seconds(2);
  Fetch fetch;  // required
  // stop_at_unix_ms: what Stop() sets, so that a fetch in progress gives up at once; the same
  // flag as the Fetch's (HttpsFetch). May be null.
  std::shared_ptr<std::atomic<int64_t>> stop_at_unix_ms;
};

// HttpsFetch: the Fetch of a running chuted: HttpsGet with a client context verifying against
// `ca_file` (InvalidArgument naming the file when it holds no certificate).
absl::StatusOr<Fetch> HttpsFetch(const std::string& ca_file, absl::Duration timeout,
                                 std::shared_ptr<const std::atomic<int64_t>> stop_at_unix_ms);

class KeyStore {
 public:
  // Create: makes options.cache_dir when it is missing.
  static absl::StatusOr<std::unique_ptr<KeyStore>> Create(KeyStoreOptions options);
  ~KeyStore();  // Stop()s

  // SetSources: the tenants' sources, from a directory snapshot. A tenant whose source did
  // not change keeps its keys and schedule. A new file source is loaded now; a new URL or
  // discovery source starts from its cached set (when the cache is for the same source) and
  // is fetched at the fetcher's next wake. A tenant not in `sources` loses its keys.
  // `reload_files` (SIGHUP) loads every file source again, changed or not.
  void SetSources(std::vector<TenantKeySource> sources, absl::Time now, bool reload_files = false);
  // Find: the tenant's keys, or null when it has none (none configured, none loaded yet).
  std::shared_ptr<const Jwks> Find(int64_t tenant_id) const;
  // KeyNotFound: a token of the tenant named a key id its set does not have: fetch the set
  // again as soon as fetch_interval_min allows. Never waits for a fetch (it takes mu_, which
  // no one holds across I/O).
  // Returns whether a fetch will follow (not for a file, nor a tenant without a source).
  bool KeyNotFound(int64_t tenant_id);

  void Start();
  void Stop();
  // RunOnce: looks at the files due for a look and fetches the sets that are due, as of
  // `now`; returns when the next thing is due (absl::InfiniteFuture() when nothing is).
  absl::Time RunOnce(absl::Time now);

  // Counters for /metrics (auth/metrics.cc).
  std::atomic<uint64_t> fetches_ok{0};
  std::atomic<uint64_t> fetches_failed{0};
  std::atomic<uint64_t> file_loads_failed{0};
  // tenants_with_keys: how many tenants with a source have keys in force.
  std::atomic<int64_t> tenants_with_keys{0};
  std::atomic<int64_t> tenants_without_keys{0};

  // FileIdentity: what tells that the file at a path changed: another file (a rename into
  // place, as editors and configuration managers do), or the same one rewritten.
  struct FileIdentity {
    bool present = false;
    dev_t device = 0;
    ino_t inode = 0;
    off_t size = 0;
    int64_t mtime_ns = 0;
    bool operator==(const FileIdentity&) const = default;
  };

 private:
  struct Entry {
    TenantKeySource source;
    std::shared_ptr<const Jwks> keys;
    absl::Time due = absl::InfinitePast();         // the next look (file) or fetch (URL)
    absl::Time last_fetch = absl::InfinitePast();  // URL: when the last fetch was done
    absl::Time fetched_at = absl::InfinitePast();  // URL: when `keys` were fetched
    bool key_not_found = false;                    // URL: a token named an unknown kid
    bool busy = false;                             // the fetcher works on it outside mu_
    FileIdentity file;                             // file: the one loaded (or refused)
    std::string last_error;                        // said once, not at every look
  };
  explicit KeyStore(KeyStoreOptions options) : options_(std::move(options)) {}
  void PublishLocked();
  void Loop();
  // FetchJwks: the JWKS document of a URL or discovery source (called without mu_).
  absl::StatusOr<std::string> FetchJwks(const TenantKeySource& source);
  std::string CachePath(int64_t tenant_id) const;
  void WriteCache(const TenantKeySource& source, absl::string_view document, absl::Time fetched_at);
  struct Cached {
    std::shared_ptr<const Jwks> keys;  // null: no cache for this source, or not usable
    absl::Time fetched_at = absl::InfinitePast();
  };
  Cached ReadCache(const TenantKeySource& source, absl::Time now) const;

  KeyStoreOptions options_;
  using Published = absl::flat_hash_map<int64_t, std::shared_ptr<const Jwks>>;
  std::atomic<std::shared_ptr<const Published>> published_{std::make_shared<const Published>()};

  mutable std::mutex mu_;
  std::condition_variable wake_;
  absl::flat_hash_map<int64_t, Entry> entries_;  // guarded by mu_
  bool stopping_ = false;                        // guarded by mu_
  bool woken_ = false;  // guarded by mu_: SetSources or KeyNotFound since the fetcher looked
  std::thread thread_;
};

}  // namespace chute::auth
