// key_store.cc: the tenants' OAuth keys from files, JWKS URLs and OpenID discovery; the
// fetcher thread, its schedule and its cache.

#include "auth/key_store.h"

#include <fcntl.h>
#include <pthread.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "base/log.h"
#include "io/file.h"

namespace chute::auth {

namespace {

KeyStore::FileIdentity Identify(const std::string& path) {
  struct stat st {};
  KeyStore::FileIdentity id;
  if (stat(path.c_str(), &st) != 0) {
    return id;
  }
  id.present = true;
  id.device = st.st_dev;
  id.inode = st.st_ino;
  id.size = st.st_size;
  id.mtime_ns = static_cast<int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec;
  return id;
}

// SameSource: the same place with the same issuer (discovery's metadata is checked against
// it; two issuers may share a metadata URL when they differ by a trailing "/").
bool SameSource(const TenantKeySource& a, const TenantKeySource& b) {
  return a.source == b.source && a.issuer == b.issuer;
}

std::string KeyIds(const Jwks& jwks) {
  std::vector<std::string> kids;
  for (const Jwks::Key& key : jwks.keys()) {
    kids.push_back(key.kid.empty() ? "(no kid)" : key.kid);
  }
  return absl::StrJoin(kids, ", ");
}

absl::StatusOr<std::string> Get(const Fetch& fetch, absl::string_view url_text, size_t max) {
  absl::StatusOr<net::HttpsUrl> url = net::ParseHttpsUrl(url_text);
  if (!url.ok()) {
    return url.status();
  }
  absl::StatusOr<net::HttpResponse> response = fetch(*url, max);
  if (!response.ok()) {
    return response.status();
  }
  if (response->status == 200) {
    return std::move(response->body);
  }
  std::string why =
      absl::StrCat("GET ", url->ToString(), ": HTTP ", response->status, " ", response->reason);
  if (response->status >= 300 && response->status < 400) {
    absl::StrAppend(&why, " to ", response->location,
                    ": redirects are not followed; configure the URL it moved to");
  }
  return absl::UnavailableError(why);
}

}  // namespace

absl::StatusOr<KeySource> ParseKeySource(absl::string_view text, absl::string_view issuer) {
  KeySource source;
  if (text.empty()) {
    return source;
  }
  if (text == kDiscoveryWord) {
    if (!absl::StartsWith(issuer, "https://")) {
      return absl::InvalidArgumentError(
          "OpenID discovery needs the tenant's issuer (an https:// URL) to find the keys");
    }
    source.kind = KeySource::Kind::kDiscovery;
    source.location = DiscoveryUrl(issuer);
    absl::StatusOr<net::HttpsUrl> url = net::ParseHttpsUrl(source.location);
    if (!url.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("the issuer makes no metadata URL: ", url.status().message()));
    }
    return source;
  }
  if (absl::StartsWithIgnoreCase(text, "https://")) {
    absl::StatusOr<net::HttpsUrl> url = net::ParseHttpsUrl(text);
    if (!url.ok()) {
      return url.status();
    }
    source.kind = KeySource::Kind::kUrl;
    source.location = std::string(text);
    return source;
  }
  if (absl::StrContains(text, "://")) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", text,
                     "' is not a JWKS source: only https:// URLs are fetched (keys fetched in "
                     "the clear could be replaced on the way)"));
  }
  if (absl::StartsWith(text, "/")) {
    source.kind = KeySource::Kind::kFile;
    source.location = std::string(text);
    return source;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("'", text,
                   "' is not a JWKS source: give a file's absolute path, an https:// URL, or "
                   "\"discovery\" (the keys the issuer's OpenID metadata names)"));
}

std::string DiscoveryUrl(absl::string_view issuer) {
  return absl::StrCat(absl::StripSuffix(issuer, "/"), kDiscoveryPath);
}

absl::StatusOr<std::string> JwksUriFromDiscovery(absl::string_view document,
                                                 absl::string_view issuer) {
  nlohmann::json doc = nlohmann::json::parse(document.begin(), document.end(), nullptr, false);
  if (doc.is_discarded() || !doc.is_object()) {
    return absl::InvalidArgumentError("the OpenID metadata is not a JSON object");
  }
  if (!doc.contains("issuer") || !doc["issuer"].is_string() ||
      doc["issuer"].get<std::string>() != issuer) {
    // Discovery §4.3: metadata for another issuer would let its keys sign for this one.
    std::string named = doc.contains("issuer") && doc["issuer"].is_string()
                            ? doc["issuer"].get<std::string>()
                            : std::string("none");
    return absl::InvalidArgumentError(
        absl::StrCat("the OpenID metadata is for issuer ", named, ", not the tenant's ", issuer));
  }
  if (!doc.contains("jwks_uri") || !doc["jwks_uri"].is_string()) {
    return absl::InvalidArgumentError("the OpenID metadata has no jwks_uri");
  }
  std::string uri = doc["jwks_uri"].get<std::string>();
  absl::StatusOr<net::HttpsUrl> url = net::ParseHttpsUrl(uri);
  if (!url.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("the OpenID metadata's jwks_uri: ", url.status().message()));
  }
  return uri;
}

absl::StatusOr<Fetch> HttpsFetch(const std::string& ca_file, absl::Duration timeout,
                                 std::shared_ptr<const std::atomic<int64_t>> stop_at_unix_ms) {
  net::TlsClientOptions verify;
  verify.ca_file = ca_file;
  verify.enforce = true;
  absl::StatusOr<std::shared_ptr<net::TlsContext>> context = net::TlsContext::NewClient(verify);
  if (!context.ok()) {
    return context.status();
  }
  return Fetch([context = *std::move(context), timeout, stop_at_unix_ms](const net::HttpsUrl& url,
                                                                         size_t body_bytes_max) {
    net::HttpsGetOptions options;
    options.tls = context;
    options.timeout = timeout;
    options.body_bytes_max = body_bytes_max;
    options.stop_at_unix_ms = stop_at_unix_ms.get();
    options.user_agent = "chuted";
    return net::HttpsGet(url, options);
  });
}

absl::StatusOr<std::unique_ptr<KeyStore>> KeyStore::Create(KeyStoreOptions options) {
  if (!options.cache_dir.empty()) {
    if (mkdir(options.cache_dir.c_str(), 0700) != 0 && errno != EEXIST) {
      return absl::PermissionDeniedError(absl::StrCat(
          options.cache_dir, ": cannot make the OAuth key cache: ", std::strerror(errno)));
    }
    struct stat st {};
    if (lstat(options.cache_dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode) ||
        st.st_uid != geteuid() || (st.st_mode & 022) != 0) {
      // Keys planted there would verify tokens: mail goes on without the cache.
      LOG_WARNING(
          "%s is not a directory of chuted's own that only it may write: OAuth keys "
          "are not cached (a restart needs the identity provider)",
          options.cache_dir);
      options.cache_dir.clear();
    }
  }
  return std::unique_ptr<KeyStore>(new KeyStore(std::move(options)));
}

KeyStore::~KeyStore() { Stop(); }

std::string KeyStore::CachePath(int64_t tenant_id) const {
  return absl::StrCat(options_.cache_dir, "/tenant-", tenant_id, ".json");
}

void KeyStore::WriteCache(const TenantKeySource& source, absl::string_view document,
                          absl::Time fetched_at) {
  if (options_.cache_dir.empty()) {
    return;
  }
  nlohmann::json cache{{"source", source.source.location},
                       {"issuer", source.issuer},
                       {"fetched_at", absl::ToUnixSeconds(fetched_at)},
                       {"jwks", std::string(document)}};
  std::string path = CachePath(source.tenant_id);
  absl::Status written = io::WriteFileDurably(
      path, cache.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
  if (written.ok()) {
    written = io::SyncDirectory(options_.cache_dir);
  }
  if (!written.ok()) {
    LOG_WARNING("tenant %s: the OAuth keys fetched are not cached: %s", source.tenant_name,
                written.message());
  }
}

KeyStore::Cached KeyStore::ReadCache(const TenantKeySource& source, absl::Time now) const {
  if (options_.cache_dir.empty()) {
    return {};
  }
  std::string path = CachePath(source.tenant_id);
  // Only a regular file of chuted's own that nobody else may write, never through a link:
  // keys planted here would verify tokens.
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) {
    return {};  // none yet
  }
  struct stat st {};
  std::string text;
  bool trusted = fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_uid == geteuid() &&
                 (st.st_mode & 022) == 0 && st.st_size <= static_cast<off_t>(kCacheBytesMax);
  if (trusted) {
    text.resize(static_cast<size_t>(st.st_size));
    ssize_t n = read(fd, text.data(), text.size());
    text.resize(n > 0 ? static_cast<size_t>(n) : 0);
  }
  close(fd);
  if (!trusted) {
    LOG_WARNING(
        "tenant %s: %s is not used: not a regular file of chuted's own, writable by it "
        "alone",
        source.tenant_name, path);
    return {};
  }
  nlohmann::json cache = nlohmann::json::parse(text, nullptr, false);
  if (cache.is_discarded() || !cache.is_object() || !cache.contains("source") ||
      cache["source"] != source.source.location || !cache.contains("issuer") ||
      cache["issuer"] != source.issuer || !cache.contains("jwks") || !cache["jwks"].is_string() ||
      !cache.contains("fetched_at") || !cache["fetched_at"].is_number_integer()) {
    return {};  // another source's, or damaged: the fetch replaces it
  }
  absl::Time fetched_at = absl::FromUnixSeconds(cache["fetched_at"].get<int64_t>());
  std::string when = absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", fetched_at, absl::UTCTimeZone());
  if (now - fetched_at > options_.keys_max_age) {
    LOG_WARNING(
        "tenant %s: the cached OAuth keys were fetched at %s, longer ago than "
        "[oauth] keys_max_age_s: not used",
        source.tenant_name, when);
    return {};
  }
  absl::StatusOr<std::shared_ptr<const Jwks>> keys = Jwks::Parse(cache["jwks"].get<std::string>());
  if (!keys.ok()) {
    return {};
  }
  LOG_INFO("tenant %s: %d OAuth key(s) from the cache (%s), fetched at %s, until %s answers",
           source.tenant_name, static_cast<int>((*keys)->keys().size()), KeyIds(**keys), when,
           source.source.location);
  return Cached{*keys, fetched_at};
}

void KeyStore::PublishLocked() {
  auto published = std::make_shared<Published>();
  int64_t with = 0;
  int64_t without = 0;
  for (const auto& [tenant_id, entry] : entries_) {
    if (entry.keys != nullptr) {
      (*published)[tenant_id] = entry.keys;
      ++with;
    } else {
      ++without;
    }
  }
  tenants_with_keys.store(with);
  tenants_without_keys.store(without);
  published_.store(std::move(published));
}

void KeyStore::SetSources(std::vector<TenantKeySource> sources, absl::Time now, bool reload_files) {
  // Which sources are new, decided under mu_; their files and caches read without it (a
  // shard's KeyNotFound takes mu_ and must never wait for a disk); installed under it again.
  std::vector<TenantKeySource> fresh;
  absl::flat_hash_map<int64_t, bool> kept;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (TenantKeySource& source : sources) {
      if (source.source.kind == KeySource::Kind::kNone) {
        continue;
      }
      auto old = entries_.find(source.tenant_id);
      bool same = old != entries_.end() && SameSource(old->second.source, source) &&
                  !(reload_files && source.source.kind == KeySource::Kind::kFile);
      if (same) {
        kept[source.tenant_id] = true;
        old->second.source.tenant_name = source.tenant_name;
      } else {
        fresh.push_back(std::move(source));
      }
    }
  }
  std::vector<Entry> made;
  for (TenantKeySource& source : fresh) {
    Entry entry;
    entry.source = std::move(source);
    entry.due = now;
    if (entry.source.source.kind == KeySource::Kind::kFile) {
      // Loaded now, so that the first token after `tenant set` verifies.
      entry.file = Identify(entry.source.source.location);
      absl::StatusOr<std::shared_ptr<const Jwks>> keys = Jwks::Load(entry.source.source.location);
      if (keys.ok()) {
        entry.keys = *keys;
      } else {
        entry.last_error = std::string(keys.status().message());
        ++file_loads_failed;
        LOG_WARNING("tenant %s: XOAUTH2 will fail: %s", entry.source.tenant_name, entry.last_error);
      }
      entry.due = now + options_.file_check_interval;
    } else {
      Cached cached = ReadCache(entry.source, now);
      entry.keys = cached.keys;
      entry.fetched_at = cached.fetched_at;
    }
    made.push_back(std::move(entry));
  }
  std::lock_guard<std::mutex> lock(mu_);
  absl::flat_hash_map<int64_t, Entry> entries;
  for (auto& [tenant_id, entry] : entries_) {
    if (kept.contains(tenant_id)) {
      entries.emplace(tenant_id, std::move(entry));
    }
  }
  for (Entry& entry : made) {
    int64_t tenant_id = entry.source.tenant_id;
    entries.insert_or_assign(tenant_id, std::move(entry));
  }
  entries_ = std::move(entries);
  PublishLocked();
  woken_ = true;
  wake_.notify_all();
}

std::shared_ptr<const Jwks> KeyStore::Find(int64_t tenant_id) const {
  std::shared_ptr<const Published> published = published_.load();
  auto it = published->find(tenant_id);
  return it == published->end() ? nullptr : it->second;
}

bool KeyStore::KeyNotFound(int64_t tenant_id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = entries_.find(tenant_id);
  if (it == entries_.end() || it->second.source.source.kind == KeySource::Kind::kFile) {
    return false;
  }
  if (!it->second.key_not_found) {
    it->second.key_not_found = true;
    woken_ = true;
    wake_.notify_all();
  }
  return true;
}

absl::StatusOr<std::string> KeyStore::FetchJwks(const TenantKeySource& source) {
  std::string jwks_url = source.source.location;
  if (source.source.kind == KeySource::Kind::kDiscovery) {
    absl::StatusOr<std::string> metadata =
        Get(options_.fetch, source.source.location, kDiscoveryBytesMax);
    if (!metadata.ok()) {
      return metadata.status();
    }
    absl::StatusOr<std::string> uri = JwksUriFromDiscovery(*metadata, source.issuer);
    if (!uri.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(source.source.location, ": ", uri.status().message()));
    }
    jwks_url = *std::move(uri);
  }
  absl::StatusOr<std::string> document = Get(options_.fetch, jwks_url, kJwksBytesMax);
  if (!document.ok()) {
    return document.status();
  }
  absl::StatusOr<std::shared_ptr<const Jwks>> parsed = Jwks::Parse(*document);
  if (!parsed.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(jwks_url, ": ", parsed.status().message()));
  }
  return document;
}

absl::Time KeyStore::RunOnce(absl::Time now) {
  // What is due, copied out: the I/O runs without mu_.
  struct Work {
    TenantKeySource source;
    FileIdentity file;
  };
  std::vector<Work> work;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [tenant_id, entry] : entries_) {
      bool is_file = entry.source.source.kind == KeySource::Kind::kFile;
      bool unknown_kid_due =
          entry.key_not_found && now >= entry.last_fetch + options_.fetch_interval_min;
      if (!entry.busy && (now >= entry.due || (!is_file && unknown_kid_due))) {
        entry.busy = true;
        // A KeyNotFound from now on asks for the fetch after this one (which may come too
        // early to see the key).
        entry.key_not_found = false;
        work.push_back(Work{entry.source, entry.file});
      }
    }
  }
  for (Work& item : work) {
    const TenantKeySource& source = item.source;
    std::shared_ptr<const Jwks> keys;
    std::string error;
    std::string document;
    FileIdentity file = item.file;
    bool changed = false;
    if (source.source.kind == KeySource::Kind::kFile) {
      file = Identify(source.source.location);
      changed = !(file == item.file);
      if (changed) {
        absl::StatusOr<std::shared_ptr<const Jwks>> loaded = Jwks::Load(source.source.location);
        if (loaded.ok()) {
          keys = *loaded;
        } else {
          error = std::string(loaded.status().message());
        }
      }
    } else {
      absl::StatusOr<std::string> fetched = FetchJwks(source);
      if (fetched.ok()) {
        document = *std::move(fetched);
        keys = *Jwks::Parse(document);
        WriteCache(source, document, now);  // before mu_: it syncs the disk
      } else {
        error = std::string(fetched.status().message());
      }
    }
    std::lock_guard<std::mutex> lock(mu_);
    auto it = entries_.find(source.tenant_id);
    if (it == entries_.end() || !SameSource(it->second.source, source) || !it->second.busy) {
      continue;  // the source changed meanwhile: the new one has its own schedule
    }
    Entry& entry = it->second;
    entry.busy = false;
    size_t kept = entry.keys != nullptr ? entry.keys->keys().size() : 0;
    std::string keeping = kept > 0 ? absl::StrCat("the ", kept, " key(s) in force stay")
                                   : std::string("XOAUTH2 fails until they load");
    if (source.source.kind == KeySource::Kind::kFile) {
      entry.due = now + options_.file_check_interval;
      entry.file = file;
      if (!changed) {
        continue;
      }
      if (keys != nullptr) {
        entry.keys = keys;
        entry.last_error.clear();
        LOG_INFO("tenant %s: %s changed: %d OAuth key(s): %s", source.tenant_name,
                 source.source.location, static_cast<int>(keys->keys().size()), KeyIds(*keys));
      } else {
        ++file_loads_failed;
        LOG_WARNING("tenant %s: the JWKS file changed and does not load: %s; %s",
                    source.tenant_name, error, keeping);
      }
      continue;
    }
    entry.last_fetch = now;
    if (keys != nullptr) {
      ++fetches_ok;
      entry.due = now + options_.refresh;
      std::string kids = KeyIds(*keys);
      if (entry.keys == nullptr || KeyIds(*entry.keys) != kids || !entry.last_error.empty()) {
        LOG_INFO("tenant %s: %d OAuth key(s) fetched from %s: %s", source.tenant_name,
                 static_cast<int>(keys->keys().size()), source.source.location, kids);
      }
      entry.keys = keys;
      entry.fetched_at = now;
      entry.last_error.clear();
    } else {
      ++fetches_failed;
      entry.due = now + options_.fetch_interval_min;
      if (entry.keys != nullptr && now - entry.fetched_at > options_.keys_max_age) {
        // Kept no longer: a key the provider has revoked must not verify forever because the
        // provider cannot be reached (or is kept from being reached).
        LOG_ERROR(
            "tenant %s: the OAuth keys were fetched at %s, longer ago than [oauth] "
            "keys_max_age_s, and cannot be fetched again: dropped; XOAUTH2 fails until "
            "they are",
            source.tenant_name,
            absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", entry.fetched_at, absl::UTCTimeZone()));
        entry.keys = nullptr;
        keeping = "the keys in force are too old and dropped";
      }
      if (error != entry.last_error) {
        LOG_WARNING("tenant %s: OAuth keys not fetched: %s; %s; trying again every %ds",
                    source.tenant_name, error, keeping,
                    static_cast<int>(absl::ToInt64Seconds(options_.fetch_interval_min)));
      }
      entry.last_error = error;
    }
  }
  std::lock_guard<std::mutex> lock(mu_);
  PublishLocked();
  absl::Time next = absl::InfiniteFuture();
  for (const auto& [tenant_id, entry] : entries_) {
    next = std::min(next, entry.due);
    if (entry.key_not_found) {
      next = std::min(next, entry.last_fetch + options_.fetch_interval_min);
    }
  }
  return next;
}

void KeyStore::Start() {
  std::lock_guard<std::mutex> lock(mu_);
  stopping_ = false;
  if (options_.stop_at_unix_ms != nullptr) {
    options_.stop_at_unix_ms->store(0);
  }
  thread_ = std::thread([this] { Loop(); });
}

void KeyStore::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    if (options_.stop_at_unix_ms != nullptr) {
      options_.stop_at_unix_ms->store(absl::ToUnixMillis(absl::Now()));
    }
    wake_.notify_all();
  }
  if (thread_.joinable()) {
    thread_.join();
  }
}

void KeyStore::Loop() {
  pthread_setname_np(pthread_self(), "oauth-keys");
  while (true) {
    absl::Time next = RunOnce(absl::Now());
    std::unique_lock<std::mutex> lock(mu_);
    // A KeyNotFound or a SetSources wakes it early (also one that came during RunOnce); so
    // does a stop.
    absl::Duration wait = std::max(next - absl::Now(), absl::Milliseconds(10));
    wait = std::min(wait, absl::Hours(1));
    wake_.wait_for(lock, absl::ToChronoMilliseconds(wait), [this] { return stopping_ || woken_; });
    woken_ = false;
    if (stopping_) {
      return;
    }
  }
}

}  // namespace chute::auth
