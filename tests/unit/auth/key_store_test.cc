// key_store_test.cc: a tenant's OAuth keys through a rotation, with the identity provider
// played by a fake Fetch and the clock driven by the test (KeyStore::RunOnce): scheduled
// refresh, the unknown-kid fetch and its bound, failures that keep the keys in force, the
// cache across a restart, OpenID discovery, and a JWKS file that changes.

#include "auth/key_store.h"

#include <gtest/gtest.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/ec_key.h>
#include <openssl/nid.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <condition_variable>
#include <fstream>
#include <map>
#include <mutex>
#include <string>
#include <thread>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace chute::auth {
namespace {

// JwksWith: a JWKS document of fresh P-256 public keys, one per kid.
std::string JwksWith(std::initializer_list<absl::string_view> kids) {
  std::string keys;
  for (absl::string_view kid : kids) {
    EC_KEY* key = EC_KEY_new_by_curve_name(NID_X9_62_prime256v1);
    EC_KEY_generate_key(key);
    BIGNUM* x = BN_new();
    BIGNUM* y = BN_new();
    EC_POINT_get_affine_coordinates_GFp(EC_KEY_get0_group(key), EC_KEY_get0_public_key(key), x, y,
                                        nullptr);
    auto coordinate = [](const BIGNUM* n) {
      std::string out(32, '\0');
      BN_bn2bin_padded(reinterpret_cast<uint8_t*>(out.data()), out.size(), n);
      return absl::WebSafeBase64Escape(out);
    };
    absl::StrAppend(&keys, keys.empty() ? "" : ",", R"({"kty":"EC","crv":"P-256","kid":")", kid,
                    R"(","x":")", coordinate(x), R"(","y":")", coordinate(y), R"("})");
    BN_free(x);
    BN_free(y);
    EC_KEY_free(key);
  }
  return absl::StrCat(R"({"keys":[)", keys, "]}");
}

std::vector<std::string> Kids(const std::shared_ptr<const Jwks>& jwks) {
  std::vector<std::string> kids;
  if (jwks != nullptr) {
    for (const Jwks::Key& key : jwks->keys()) {
      kids.push_back(key.kid);
    }
  }
  return kids;
}

constexpr absl::string_view kIssuer = "https://idp.example.test/tid-1/v2.0";
constexpr absl::string_view kJwksUrl = "https://idp.example.test/tid-1/discovery/v2.0/keys";

// FakeIdp: what each URL answers, and how often it was asked.
struct FakeIdp {
  std::map<std::string, absl::StatusOr<net::HttpResponse>> answers;
  std::map<std::string, int> gets;

  void Serve(absl::string_view url, std::string body, int status = 200) {
    net::HttpResponse response;
    response.status = status;
    response.reason = status == 200 ? "OK" : "Not Found";
    response.body = std::move(body);
    answers.insert_or_assign(std::string(url), response);
  }
  void Fail(absl::string_view url, absl::string_view why) {
    answers.insert_or_assign(std::string(url), absl::UnavailableError(why));
  }
  Fetch AsFetch() {
    return [this](const net::HttpsUrl& url, size_t) -> absl::StatusOr<net::HttpResponse> {
      std::string key = url.ToString();
      ++gets[key];
      auto it = answers.find(key);
      if (it == answers.end()) {
        return absl::UnavailableError(absl::StrCat("GET ", key, ": connection refused"));
      }
      return it->second;
    };
  }
};

class KeyStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ::testing::TempDir() + "/key_store_test.XXXXXX";
    ASSERT_NE(mkdtemp(dir_.data()), nullptr);
  }
  void TearDown() override {
    std::string command = absl::StrCat("rm -rf '", dir_, "'");
    ASSERT_EQ(system(command.c_str()), 0);
  }

  std::unique_ptr<KeyStore> MakeStore() {
    KeyStoreOptions options;
    options.cache_dir = dir_ + "/cache";
    options.refresh = absl::Hours(1);
    options.fetch_interval_min = absl::Seconds(60);
    options.file_check_interval = absl::Seconds(2);
    options.fetch = idp_.AsFetch();
    absl::StatusOr<std::unique_ptr<KeyStore>> store = KeyStore::Create(std::move(options));
    EXPECT_TRUE(store.ok()) << store.status();
    return store.ok() ? *std::move(store) : nullptr;
  }
  // FetchOnceAndStop: a store fetches kJwksUrl's keys (k1) once and is gone, leaving its
  // cache for the next one.
  void FetchOnceAndStop() {
    idp_.Serve(kJwksUrl, JwksWith({"k1"}));
    std::unique_ptr<KeyStore> store = MakeStore();
    store->SetSources({Source(kJwksUrl)}, t0_);
    store->RunOnce(t0_);
  }
  TenantKeySource Source(absl::string_view text, int64_t tenant_id = 7) {
    absl::StatusOr<KeySource> source = ParseKeySource(text, kIssuer);
    EXPECT_TRUE(source.ok()) << source.status();
    return TenantKeySource{tenant_id, "contoso", std::string(kIssuer), *source};
  }

  std::string dir_;
  FakeIdp idp_;
  absl::Time t0_ = absl::FromUnixSeconds(1'800'000'000);
};

TEST(ParseKeySource, TakesAFileAUrlOrDiscovery) {
  absl::StatusOr<KeySource> none = ParseKeySource("", kIssuer);
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(none->kind, KeySource::Kind::kNone);
  absl::StatusOr<KeySource> file = ParseKeySource("/etc/chute/jwks.json", kIssuer);
  ASSERT_TRUE(file.ok());
  EXPECT_EQ(file->kind, KeySource::Kind::kFile);
  absl::StatusOr<KeySource> url = ParseKeySource(kJwksUrl, kIssuer);
  ASSERT_TRUE(url.ok());
  EXPECT_EQ(url->kind, KeySource::Kind::kUrl);
  EXPECT_EQ(url->location, kJwksUrl);
  absl::StatusOr<KeySource> discovery = ParseKeySource("discovery", kIssuer);
  ASSERT_TRUE(discovery.ok());
  EXPECT_EQ(discovery->kind, KeySource::Kind::kDiscovery);
  EXPECT_EQ(discovery->location,
            "https://idp.example.test/tid-1/v2.0/.well-known/openid-configuration");
  EXPECT_EQ(DiscoveryUrl("https://sts.example.test/tid-1/"),
            "https://sts.example.test/tid-1/.well-known/openid-configuration");

  EXPECT_FALSE(ParseKeySource("discovery", "").ok());
  EXPECT_FALSE(ParseKeySource("http://idp.example.test/keys", kIssuer).ok());
  EXPECT_FALSE(ParseKeySource("https://user@idp.example.test/keys", kIssuer).ok());
  EXPECT_FALSE(ParseKeySource("jwks.json", kIssuer).ok());  // relative: chuted runs elsewhere
}

TEST(JwksUriFromDiscovery, NeedsTheTenantsIssuerAndAnHttpsJwksUri) {
  std::string good =
      absl::StrCat(R"({"issuer":")", kIssuer, R"(","jwks_uri":")", kJwksUrl, R"("})");
  absl::StatusOr<std::string> uri = JwksUriFromDiscovery(good, kIssuer);
  ASSERT_TRUE(uri.ok()) << uri.status();
  EXPECT_EQ(*uri, kJwksUrl);
  absl::StatusOr<std::string> other = JwksUriFromDiscovery(
      absl::StrCat(R"({"issuer":"https://evil.test/","jwks_uri":")", kJwksUrl, R"("})"), kIssuer);
  ASSERT_FALSE(other.ok());
  EXPECT_NE(other.status().message().find("issuer https://evil.test/"), std::string::npos);
  EXPECT_FALSE(
      JwksUriFromDiscovery(
          absl::StrCat(R"({"issuer":")", kIssuer, R"(","jwks_uri":"http://x.test/k"})"), kIssuer)
          .ok());
  EXPECT_FALSE(
      JwksUriFromDiscovery(absl::StrCat(R"({"issuer":")", kIssuer, R"("})"), kIssuer).ok());
  EXPECT_FALSE(JwksUriFromDiscovery("[1]", kIssuer).ok());
}

TEST_F(KeyStoreTest, AUrlIsFetchedThenRefreshedOnSchedule) {
  idp_.Serve(kJwksUrl, JwksWith({"k1"}));
  std::unique_ptr<KeyStore> store = MakeStore();
  store->SetSources({Source(kJwksUrl)}, t0_);
  EXPECT_EQ(store->Find(7), nullptr);  // nothing cached, nothing fetched yet
  EXPECT_EQ(store->RunOnce(t0_), t0_ + absl::Hours(1));
  EXPECT_EQ(Kids(store->Find(7)), std::vector<std::string>{"k1"});
  EXPECT_EQ(store->fetches_ok.load(), 1u);
  EXPECT_EQ(store->tenants_with_keys.load(), 1);

  // The provider publishes k2 beside k1 ahead of using it; the hourly refresh picks it up.
  idp_.Serve(kJwksUrl, JwksWith({"k1", "k2"}));
  store->RunOnce(t0_ + absl::Minutes(59));
  EXPECT_EQ(idp_.gets[std::string(kJwksUrl)], 1);
  store->RunOnce(t0_ + absl::Hours(1));
  EXPECT_EQ(idp_.gets[std::string(kJwksUrl)], 2);
  EXPECT_EQ(Kids(store->Find(7)), (std::vector<std::string>{"k1", "k2"}));
}

TEST_F(KeyStoreTest, AnUnknownKidFetchesAgainButNoMoreOftenThanTheMinimumInterval) {
  idp_.Serve(kJwksUrl, JwksWith({"k1"}));
  std::unique_ptr<KeyStore> store = MakeStore();
  store->SetSources({Source(kJwksUrl)}, t0_);
  store->RunOnce(t0_);
  ASSERT_EQ(idp_.gets[std::string(kJwksUrl)], 1);

  // Rotated without warning: tokens name k2 at once.
  idp_.Serve(kJwksUrl, JwksWith({"k2"}));
  for (int i = 0; i < 1000; ++i) {
    EXPECT_TRUE(store->KeyNotFound(7));  // a flood of tokens with unknown kids
  }
  // Not before fetch_interval_min after the last fetch...
  EXPECT_EQ(store->RunOnce(t0_ + absl::Seconds(10)), t0_ + absl::Seconds(60));
  EXPECT_EQ(idp_.gets[std::string(kJwksUrl)], 1);
  EXPECT_EQ(Kids(store->Find(7)), std::vector<std::string>{"k1"});
  // ...then once, however many asked.
  store->RunOnce(t0_ + absl::Seconds(60));
  EXPECT_EQ(idp_.gets[std::string(kJwksUrl)], 2);
  EXPECT_EQ(Kids(store->Find(7)), std::vector<std::string>{"k2"});
  store->RunOnce(t0_ + absl::Seconds(61));
  EXPECT_EQ(idp_.gets[std::string(kJwksUrl)], 2);
  EXPECT_FALSE(store->KeyNotFound(99));  // a tenant without a source
}

TEST_F(KeyStoreTest, AFailedFetchKeepsTheKeysInForceAndTriesAgainSooner) {
  idp_.Serve(kJwksUrl, JwksWith({"k1"}));
  std::unique_ptr<KeyStore> store = MakeStore();
  store->SetSources({Source(kJwksUrl)}, t0_);
  store->RunOnce(t0_);
  const std::pair<const char*, std::function<void()>> failures[] = {
      {"unreachable", [&] { idp_.Fail(kJwksUrl, "GET ...: connection refused"); }},
      {"404", [&] { idp_.Serve(kJwksUrl, "gone", 404); }},
      {"not a JWKS", [&] { idp_.Serve(kJwksUrl, R"({"keys":"no"})"); }},
      {"no usable key",
       [&] { idp_.Serve(kJwksUrl, R"({"keys":[{"kty":"oct","k":"c2VjcmV0"}]})"); }},
  };
  absl::Time now = t0_ + absl::Hours(1);
  for (const auto& [what, fail] : failures) {
    fail();
    absl::Time next = store->RunOnce(now);
    EXPECT_EQ(Kids(store->Find(7)), std::vector<std::string>{"k1"}) << what;
    EXPECT_EQ(next, now + absl::Seconds(60)) << what;
    now = next;
  }
  EXPECT_EQ(store->fetches_failed.load(), 4u);
  idp_.Serve(kJwksUrl, JwksWith({"k2"}));
  EXPECT_EQ(store->RunOnce(now), now + absl::Hours(1));
  EXPECT_EQ(Kids(store->Find(7)), std::vector<std::string>{"k2"});
}

TEST_F(KeyStoreTest, ARestartWhileTheProviderIsDownStartsFromTheCache) {
  FetchOnceAndStop();
  std::string cache = dir_ + "/cache/tenant-7.json";
  struct stat st {};
  ASSERT_EQ(stat(cache.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  ASSERT_EQ(stat((dir_ + "/cache").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);

  idp_.Fail(kJwksUrl, "connection refused");
  std::unique_ptr<KeyStore> restarted = MakeStore();
  restarted->SetSources({Source(kJwksUrl)}, t0_ + absl::Hours(2));
  EXPECT_EQ(Kids(restarted->Find(7)), std::vector<std::string>{"k1"});  // before any fetch
  restarted->RunOnce(t0_ + absl::Hours(2));
  EXPECT_EQ(Kids(restarted->Find(7)), std::vector<std::string>{"k1"});

  // The cache of another source is not this one's keys.
  std::unique_ptr<KeyStore> moved = MakeStore();
  moved->SetSources({Source("https://other.example.test/keys")}, t0_);
  EXPECT_EQ(moved->Find(7), nullptr);
}

TEST_F(KeyStoreTest, KeysThatCannotBeFetchedAgainForTheMaximumAgeAreDropped) {
  idp_.Serve(kJwksUrl, JwksWith({"k1"}));
  {
    std::unique_ptr<KeyStore> store = MakeStore();
    store->SetSources({Source(kJwksUrl)}, t0_);
    store->RunOnce(t0_);
    idp_.Fail(kJwksUrl, "connection refused");  // down from now on
    store->RunOnce(t0_ + absl::Hours(24 * 7));
    EXPECT_EQ(Kids(store->Find(7)), std::vector<std::string>{"k1"});  // 7 days: still kept
    store->RunOnce(t0_ + absl::Hours(24 * 7) + absl::Minutes(1));
    EXPECT_EQ(store->Find(7), nullptr);  // older: a revoked key must not verify forever
    EXPECT_EQ(store->tenants_without_keys.load(), 1);
  }
  // Nor does a cache that old come back at a restart.
  std::unique_ptr<KeyStore> restarted = MakeStore();
  restarted->SetSources({Source(kJwksUrl)}, t0_ + absl::Hours(24 * 8));
  EXPECT_EQ(restarted->Find(7), nullptr);
  std::unique_ptr<KeyStore> soon = MakeStore();
  soon->SetSources({Source(kJwksUrl)}, t0_ + absl::Hours(24));
  EXPECT_EQ(Kids(soon->Find(7)), std::vector<std::string>{"k1"});
}

TEST_F(KeyStoreTest, ACacheOthersCouldWriteIsNotBelieved) {
  FetchOnceAndStop();
  idp_.Fail(kJwksUrl, "connection refused");  // from here on, keys can come from the cache only
  std::string cache = dir_ + "/cache/tenant-7.json";
  auto restart = [&] {
    std::unique_ptr<KeyStore> restarted = MakeStore();
    restarted->SetSources({Source(kJwksUrl)}, t0_);
    return restarted->Find(7);
  };
  ASSERT_EQ(Kids(restart()), std::vector<std::string>{"k1"});  // as it was written: believed
  ASSERT_EQ(chmod(cache.c_str(), 0666), 0);
  EXPECT_EQ(restart(), nullptr);
  ASSERT_EQ(chmod(cache.c_str(), 0600), 0);
  // Nor one in a directory others may write (they could replace the file).
  ASSERT_EQ(chmod((dir_ + "/cache").c_str(), 0777), 0);
  EXPECT_EQ(restart(), nullptr);
  ASSERT_EQ(chmod((dir_ + "/cache").c_str(), 0700), 0);
  ASSERT_EQ(Kids(restart()), std::vector<std::string>{"k1"});
  // Nor one reached through a link, wherever it points.
  ASSERT_EQ(rename(cache.c_str(), (dir_ + "/planted.json").c_str()), 0);
  ASSERT_EQ(symlink((dir_ + "/planted.json").c_str(), cache.c_str()), 0);
  std::unique_ptr<KeyStore> linked = MakeStore();
  linked->SetSources({Source(kJwksUrl)}, t0_);
  EXPECT_EQ(linked->Find(7), nullptr);
}

TEST_F(KeyStoreTest, WhatChangesDuringAFetchIsNotLost) {
  // The provider answers only when the test lets it: the fetch runs on another thread.
  std::mutex mu;
  std::condition_variable released;
  bool go = false;
  int waiting = 0;
  idp_.Serve(kJwksUrl, JwksWith({"old"}));
  idp_.Serve("https://new.example.test/keys", JwksWith({"new"}));
  KeyStoreOptions options;
  options.cache_dir = dir_ + "/cache";
  Fetch inner = idp_.AsFetch();
  options.fetch = [&](const net::HttpsUrl& url, size_t max) {
    std::unique_lock<std::mutex> lock(mu);
    ++waiting;
    released.notify_all();
    released.wait(lock, [&] { return go; });
    return inner(url, max);
  };
  std::unique_ptr<KeyStore> store = *KeyStore::Create(std::move(options));
  store->SetSources({Source(kJwksUrl)}, t0_);
  std::thread fetcher([&] { store->RunOnce(t0_); });
  {
    std::unique_lock<std::mutex> lock(mu);
    released.wait(lock, [&] { return waiting == 1; });
  }
  // While the old source's fetch is out: the tenant moves to another URL, and a token names
  // a kid nobody has. Neither waits for the fetch.
  store->SetSources({Source("https://new.example.test/keys")}, t0_);
  EXPECT_TRUE(store->KeyNotFound(7));
  {
    std::lock_guard<std::mutex> lock(mu);
    go = true;
    released.notify_all();
  }
  fetcher.join();
  EXPECT_EQ(store->Find(7), nullptr);  // the old source's keys do not sign for the new one
  store->RunOnce(t0_ + absl::Seconds(1));
  EXPECT_EQ(Kids(store->Find(7)), std::vector<std::string>{"new"});
}

TEST_F(KeyStoreTest, DiscoveryFollowsTheMetadataOfTheTenantsIssuerOnly) {
  std::string metadata_url = DiscoveryUrl(kIssuer);
  idp_.Serve(metadata_url, absl::StrCat(R"({"issuer":")", kIssuer, R"(","jwks_uri":")", kJwksUrl,
                                        R"(","token_endpoint":"https://idp.example.test/t"})"));
  idp_.Serve(kJwksUrl, JwksWith({"k1"}));
  std::unique_ptr<KeyStore> store = MakeStore();
  store->SetSources({Source("discovery")}, t0_);
  store->RunOnce(t0_);
  EXPECT_EQ(Kids(store->Find(7)), std::vector<std::string>{"k1"});

  // Metadata that names another issuer (a misconfigured or hostile endpoint) is not followed.
  idp_.Serve(metadata_url,
             absl::StrCat(R"({"issuer":"https://evil.test","jwks_uri":")", kJwksUrl, R"("})"));
  idp_.Serve(kJwksUrl, JwksWith({"evil"}));
  store->RunOnce(t0_ + absl::Hours(1));
  EXPECT_EQ(Kids(store->Find(7)), std::vector<std::string>{"k1"});
  EXPECT_EQ(store->fetches_failed.load(), 1u);
}

TEST_F(KeyStoreTest, AJwksFileIsReadAgainWhenItChanges) {
  std::string path = dir_ + "/jwks.json";
  auto write = [&](const std::string& text) {
    std::string tmp = path + ".new";
    std::ofstream(tmp) << text;
    ASSERT_EQ(rename(tmp.c_str(), path.c_str()), 0);  // as configuration managers replace files
  };
  write(JwksWith({"k1"}));
  std::unique_ptr<KeyStore> store = MakeStore();
  store->SetSources({Source(path)}, t0_);
  EXPECT_EQ(Kids(store->Find(7)), std::vector<std::string>{"k1"});  // loaded at once
  EXPECT_EQ(store->RunOnce(t0_ + absl::Seconds(2)), t0_ + absl::Seconds(4));
  EXPECT_FALSE(store->KeyNotFound(7));  // a file is not fetched

  write(JwksWith({"k2"}));
  store->RunOnce(t0_ + absl::Seconds(4));
  EXPECT_EQ(Kids(store->Find(7)), std::vector<std::string>{"k2"});

  write("{ broken");
  store->RunOnce(t0_ + absl::Seconds(6));
  EXPECT_EQ(Kids(store->Find(7)), std::vector<std::string>{"k2"});  // the old keys stay
  EXPECT_EQ(store->file_loads_failed.load(), 1u);
  store->RunOnce(t0_ + absl::Seconds(8));
  EXPECT_EQ(store->file_loads_failed.load(), 1u);  // said once, not at every look

  write(JwksWith({"k3"}));
  store->RunOnce(t0_ + absl::Seconds(10));
  EXPECT_EQ(Kids(store->Find(7)), std::vector<std::string>{"k3"});
}

TEST_F(KeyStoreTest, ASourceThatChangesStartsAfreshAndARemovedOneLeaves) {
  idp_.Serve(kJwksUrl, JwksWith({"k1"}));
  idp_.Serve("https://new.example.test/keys", JwksWith({"n1"}));
  std::unique_ptr<KeyStore> store = MakeStore();
  store->SetSources({Source(kJwksUrl)}, t0_);
  store->RunOnce(t0_);
  store->SetSources({Source(kJwksUrl)}, t0_ + absl::Minutes(1));  // unchanged: no new fetch
  store->RunOnce(t0_ + absl::Minutes(1));
  EXPECT_EQ(idp_.gets[std::string(kJwksUrl)], 1);
  store->SetSources({Source("https://new.example.test/keys")}, t0_ + absl::Minutes(2));
  EXPECT_EQ(store->Find(7), nullptr);  // the old source's keys do not sign for the new one
  store->RunOnce(t0_ + absl::Minutes(2));
  EXPECT_EQ(Kids(store->Find(7)), std::vector<std::string>{"n1"});
  store->SetSources({}, t0_ + absl::Minutes(3));
  EXPECT_EQ(store->Find(7), nullptr);
  EXPECT_EQ(store->tenants_with_keys.load(), 0);
}

TEST_F(KeyStoreTest, TheFetcherThreadFetchesAndStops) {
  idp_.Serve(kJwksUrl, JwksWith({"k1"}));
  std::unique_ptr<KeyStore> store = MakeStore();
  store->SetSources({Source(kJwksUrl)}, absl::Now());
  store->Start();
  for (int i = 0; i < 2000 && store->Find(7) == nullptr; ++i) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  EXPECT_EQ(Kids(store->Find(7)), std::vector<std::string>{"k1"});
  store->Stop();  // joins: a fetcher waiting for its next refresh (an hour) is woken
}

}  // namespace
}  // namespace chute::auth
