// directory_test.cc: unit tests for the directory store: caps, uniqueness, modes, domains.

#include "directory/directory.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <string>
#include <thread>

#include "absl/strings/match.h"
#include "db/sqlite.h"

namespace chute::directory {
namespace {

// Designated initializers would trip -Wmissing-field-initializers.
inline AccountChange WithAlias(std::string alias) {
  AccountChange change;
  change.add_aliases = {std::move(alias)};
  return change;
}
inline AccountChange WithPrimary(std::string address) {
  AccountChange change;
  change.primary_address = std::move(address);
  return change;
}

class StoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir[] = "/tmp/chute-directory-XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    dir_ = dir;
    absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(dir_ + "/d.db", true);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);
    ASSERT_TRUE(store_->AddTenant("contoso", {"contoso.test", "Fabrikam.test"}).ok());
  }
  void TearDown() override {
    store_.reset();
    std::string command = "rm -rf '" + dir_ + "'";
    ASSERT_EQ(std::system(command.c_str()), 0);
  }

  std::string dir_;
  std::unique_ptr<Store> store_;
};

TEST_F(StoreTest, OpenWithoutCreateOnAMissingFileFails) {
  EXPECT_FALSE(Store::Open(dir_ + "/absent.db", false).ok());
}

TEST_F(StoreTest, SnapshotLooksUpAddressesCaseInsensitively) {
  ASSERT_TRUE(store_->AddAccount({"contoso", "App", "App@Contoso.test", ""}, 100).ok());
  ASSERT_TRUE(store_->UpdateAccount("App", WithAlias("alias@fabrikam.test")).ok());
  absl::StatusOr<std::shared_ptr<const Snapshot>> snapshot = store_->LoadSnapshot();
  ASSERT_TRUE(snapshot.ok());
  const Account* account = (*snapshot)->FindAccount("app@CONTOSO.TEST");
  ASSERT_NE(account, nullptr);
  // The local part is stored as given, the domain in its normalized (A-label) form.
  EXPECT_EQ(account->primary_address, "App@contoso.test");
  EXPECT_EQ((*snapshot)->FindAccount("ALIAS@fabrikam.test"), account);
  EXPECT_TRUE((*snapshot)->IsAcceptedDomain(account->tenant_id, "FABRIKAM.TEST"));
  EXPECT_FALSE((*snapshot)->IsAcceptedDomain(account->tenant_id, "other.test"));
}

TEST_F(StoreTest, AccountCapAtBelowAndAbove) {
  for (int i = 0; i < 3; ++i) {
    std::string name = "a" + std::to_string(i);
    ASSERT_TRUE(store_->AddAccount({"contoso", name, name + "@contoso.test", ""}, 3).ok()) << i;
  }
  absl::StatusOr<Account> fourth = store_->AddAccount({"contoso", "a3", "a3@contoso.test", ""}, 3);
  EXPECT_EQ(fourth.status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(StoreTest, AddressesAreUniqueAcrossTenants) {
  ASSERT_TRUE(store_->AddTenant("other", {"other.test"}).ok());
  ASSERT_TRUE(store_->AddAccount({"contoso", "A", "a@contoso.test", ""}, 100).ok());
  ASSERT_TRUE(store_->AddAccount({"other", "B", "b@other.test", ""}, 100).ok());
  // An alias must be in the account's own tenant's domains, and unused.
  EXPECT_EQ(store_->UpdateAccount("B", WithAlias("x@contoso.test")).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->UpdateAccount("B", WithPrimary("A@contoso.test")).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->AddTenant("third", {"CONTOSO.test"}).status().code(),
            absl::StatusCode::kAlreadyExists);
}

TEST_F(StoreTest, RemovingATenantWithAccountsNeedsForce) {
  ASSERT_TRUE(store_->AddAccount({"contoso", "A", "a@contoso.test", ""}, 100).ok());
  EXPECT_EQ(store_->RemoveTenant("contoso", false).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(store_->RemoveTenant("contoso", true).ok());
  absl::StatusOr<std::shared_ptr<const Snapshot>> snapshot = store_->LoadSnapshot();
  ASSERT_TRUE(snapshot.ok());
  EXPECT_TRUE((*snapshot)->accounts().empty());
  EXPECT_EQ((*snapshot)->FindAccount("a@contoso.test"), nullptr);
}

TEST_F(StoreTest, DataVersionMovesWhenAnotherConnectionWrites) {
  absl::StatusOr<std::unique_ptr<Store>> reader = Store::Open(dir_ + "/d.db", false);
  ASSERT_TRUE(reader.ok());
  absl::StatusOr<int64_t> before = (*reader)->DataVersion();
  ASSERT_TRUE(store_->AddAccount({"contoso", "A", "a@contoso.test", ""}, 100).ok());
  absl::StatusOr<int64_t> after = (*reader)->DataVersion();
  ASSERT_TRUE(before.ok() && after.ok());
  EXPECT_NE(*before, *after);
}

mode_t ModeOf(const std::string& path) {
  struct stat st {};
  EXPECT_EQ(stat(path.c_str(), &st), 0) << path;
  return st.st_mode & 07777;
}

TEST_F(StoreTest, DatabaseAndItsWalAndShmAre0600WhateverTheUmask) {
  mode_t saved = umask(0);  // the widest: nothing filtered
  std::string path = dir_ + "/new.db";
  absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(path, true);
  umask(saved);
  ASSERT_TRUE(store.ok()) << store.status();
  ASSERT_TRUE((*store)->AddTenant("t", {"t.example"}).ok());
  // -wal and -shm exist while a connection is open (SQLite removes them at the last close).
  for (const char* suffix : {"", "-wal", "-shm"}) {
    EXPECT_EQ(ModeOf(path + suffix), 0600u) << suffix;
  }
}

TEST_F(StoreTest, AWorldReadableDatabaseLosesItsOtherBitsWhenOpenedForWriting) {
  std::string path = dir_ + "/d.db";
  ASSERT_EQ(chmod(path.c_str(), 0644), 0);
  ASSERT_TRUE(Store::Open(path, true).ok());
  EXPECT_EQ(ModeOf(path), 0640u);              // group bits are only warned about
  ASSERT_TRUE(Store::Open(path, false).ok());  // a reader (chuted's reopen) changes nothing
  EXPECT_EQ(ModeOf(path), 0640u);
}

TEST_F(StoreTest, AnIdnAndItsALabelFormAreOneDomain) {
  absl::StatusOr<Tenant> books = store_->AddTenant("books", {"Bücher.example"});
  ASSERT_TRUE(books.ok()) << books.status();
  EXPECT_EQ(books->domains, std::vector<std::string>{"xn--bcher-kva.example"});
  absl::StatusOr<Tenant> again = store_->AddTenant("again", {"XN--bcher-kva.example"});
  EXPECT_EQ(again.status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_TRUE(absl::StrContains(again.status().message(), "the tenant 'books'")) << again.status();
  ASSERT_TRUE(store_->AddAccount({"books", "Info", "Info@bücher.example", ""}, 100).ok());
  absl::StatusOr<std::shared_ptr<const Snapshot>> snapshot = store_->LoadSnapshot();
  ASSERT_TRUE(snapshot.ok());
  const Account* account = (*snapshot)->FindAccount("info@BÜCHER.example");
  ASSERT_NE(account, nullptr);
  EXPECT_EQ(account->primary_address, "Info@xn--bcher-kva.example");
  EXPECT_EQ((*snapshot)->FindAccount("INFO@xn--bcher-kva.example"), account);
  EXPECT_TRUE((*snapshot)->IsAcceptedDomain(books->id, "bücher.example"));
  EXPECT_EQ((*snapshot)->FindTenantByDomain("BÜCHER.EXAMPLE")->name, "books");
}

TEST_F(StoreTest, ATakenDomainNamesItsTenant) {
  absl::StatusOr<Tenant> other = store_->AddTenant("other", {"contoso.test"});
  EXPECT_EQ(other.status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_TRUE(absl::StrContains(other.status().message(), "tenant 'contoso'")) << other.status();
}

TEST_F(StoreTest, SingleLabelDomainsAreRefused) {
  EXPECT_EQ(store_->AddTenant("local", {"localhost"}).status().code(),
            absl::StatusCode::kInvalidArgument);
  TenantChange change;
  change.add_domains = {"corp"};
  EXPECT_EQ(store_->UpdateTenant("contoso", change).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(StoreTest, ReplyToMustBeInOneOfTheTenantsDomains) {
  ASSERT_TRUE(store_->AddTenant("other", {"other.test"}).ok());
  ASSERT_TRUE(store_->AddAccount({"contoso", "A", "a@contoso.test", ""}, 100).ok());
  AccountChange change;
  change.reply_to = "x@other.test";
  EXPECT_EQ(store_->UpdateAccount("A", change).status().code(), absl::StatusCode::kInvalidArgument);
  change.reply_to = "x@FABRIKAM.test";  // the tenant's second domain
  absl::StatusOr<Account> updated = store_->UpdateAccount("A", change);
  ASSERT_TRUE(updated.ok()) << updated.status();
  EXPECT_EQ(updated->reply_to, "x@fabrikam.test");
  change.reply_to = "";  // clears
  EXPECT_TRUE(store_->UpdateAccount("A", change).ok());
}

TEST_F(StoreTest, PasswordPolicyIsPerTenantAndRangeChecked) {
  absl::StatusOr<std::shared_ptr<const Snapshot>> snapshot = store_->LoadSnapshot();
  ASSERT_TRUE(snapshot.ok());
  const PasswordPolicy& defaults = (*snapshot)->FindTenantByName("contoso")->password_policy;
  EXPECT_EQ(defaults.min_length, 12);
  EXPECT_EQ(defaults.complexity, PasswordComplexity::kThreeOfFour);
  EXPECT_EQ(defaults.history, 5);
  TenantChange change;
  change.password_min_length = 20;
  change.password_complexity = PasswordComplexity::kNone;
  change.password_history = 0;
  absl::StatusOr<Tenant> tenant = store_->UpdateTenant("contoso", change);
  ASSERT_TRUE(tenant.ok()) << tenant.status();
  EXPECT_EQ(tenant->password_policy.min_length, 20);
  EXPECT_EQ(tenant->password_policy.complexity, PasswordComplexity::kNone);
  EXPECT_EQ(tenant->password_policy.history, 0);
  TenantChange bad;
  bad.password_history = kPasswordHistoryMax + 1;
  EXPECT_EQ(store_->UpdateTenant("contoso", bad).status().code(),
            absl::StatusCode::kInvalidArgument);
  bad = TenantChange();
  bad.password_min_length = 0;
  EXPECT_EQ(store_->UpdateTenant("contoso", bad).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(StoreTest, OAuthAppAccessIsAnyUntilSetAndAnUnknownSpellingReadsAsListed) {
  absl::StatusOr<std::shared_ptr<const Snapshot>> snapshot = store_->LoadSnapshot();
  ASSERT_TRUE(snapshot.ok());
  EXPECT_EQ((*snapshot)->FindTenantByName("contoso")->oauth_app_access, AppAccess::kAny);
  TenantChange change;
  change.oauth_app_access = AppAccess::kListed;
  absl::StatusOr<Tenant> tenant = store_->UpdateTenant("contoso", change);
  ASSERT_TRUE(tenant.ok()) << tenant.status();
  EXPECT_EQ(tenant->oauth_app_access, AppAccess::kListed);
  change.oauth_app_access = AppAccess::kAny;
  EXPECT_EQ(store_->UpdateTenant("contoso", change)->oauth_app_access, AppAccess::kAny);
  // A value this build does not know (a newer chutectl's) is read as the stricter one.
  absl::StatusOr<std::unique_ptr<db::Database>> raw = db::Database::Open(dir_ + "/d.db", false);
  ASSERT_TRUE(raw.ok());
  ASSERT_TRUE((*raw)->Exec("UPDATE tenants SET oauth_app_access = 'some'").ok());
  snapshot = store_->LoadSnapshot();
  ASSERT_TRUE(snapshot.ok());
  EXPECT_EQ((*snapshot)->FindTenantByName("contoso")->oauth_app_access, AppAccess::kListed);
  EXPECT_EQ(ParseAppAccess("listed").value(), AppAccess::kListed);
  EXPECT_EQ(ParseAppAccess("any").value(), AppAccess::kAny);
  EXPECT_FALSE(ParseAppAccess("Any").ok());
  EXPECT_EQ(AppAccessName(AppAccess::kListed), "listed");
}

TEST_F(StoreTest, PasswordHistoryIsNewestFirstAndBounded) {
  absl::StatusOr<Account> account =
      store_->AddAccount({"contoso", "A", "a@contoso.test", "h0"}, 100);
  ASSERT_TRUE(account.ok());
  for (int i = 1; i < 30; ++i) {
    AccountChange change;
    change.password_hash = "h" + std::to_string(i);
    ASSERT_TRUE(store_->UpdateAccount("A", change).ok());
  }
  absl::StatusOr<std::vector<std::string>> last5 = store_->PasswordHashes(account->id, 5);
  ASSERT_TRUE(last5.ok());
  EXPECT_EQ(*last5, (std::vector<std::string>{"h29", "h28", "h27", "h26", "h25"}));
  absl::StatusOr<std::vector<std::string>> all = store_->PasswordHashes(account->id, 1000);
  ASSERT_TRUE(all.ok());
  // The current hash and kPasswordHistoryMax - 1 previous ones: older ones were deleted.
  ASSERT_EQ(all->size(), static_cast<size_t>(kPasswordHistoryMax));
  EXPECT_EQ(all->back(), "h6");
  EXPECT_TRUE(store_->PasswordHashes(account->id, 0)->empty());
}

TEST_F(StoreTest, AnAccountsPolicyOverridesItsTenantsAndCanBeCleared) {
  ASSERT_TRUE(store_->AddAccount({"contoso", "A", "a@contoso.test", "h"}, 100).ok());
  std::shared_ptr<const Snapshot> snapshot = *store_->LoadSnapshot();
  const Account* a = snapshot->FindAccount("a@contoso.test");
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->basic_auth, std::nullopt);
  EXPECT_TRUE(a->enabled);
  EXPECT_TRUE(BasicAuthAllowed(*a, *snapshot->FindTenant(a->tenant_id)));
  TenantChange off;
  off.basic_auth = false;
  ASSERT_TRUE(store_->UpdateTenant("contoso", off).ok());
  AccountChange allow;
  allow.basic_auth = std::optional<bool>(true);
  allow.enabled = false;
  absl::StatusOr<Account> updated = store_->UpdateAccount("A", allow);
  ASSERT_TRUE(updated.ok()) << updated.status();
  EXPECT_EQ(updated->basic_auth, std::optional<bool>(true));
  EXPECT_FALSE(updated->enabled);
  snapshot = *store_->LoadSnapshot();
  EXPECT_TRUE(BasicAuthAllowed(*snapshot->FindAccount("a@contoso.test"),
                               *snapshot->FindTenantByName("contoso")));
  AccountChange inherit;
  inherit.basic_auth = std::optional<bool>();  // back to the tenant's (off)
  inherit.enabled = true;
  updated = store_->UpdateAccount("A", inherit);
  ASSERT_TRUE(updated.ok());
  EXPECT_EQ(updated->basic_auth, std::nullopt);
  EXPECT_TRUE(updated->enabled);
  snapshot = *store_->LoadSnapshot();
  EXPECT_FALSE(BasicAuthAllowed(*snapshot->FindAccount("a@contoso.test"),
                                *snapshot->FindTenantByName("contoso")));
}

TEST_F(StoreTest, ASchema3DatabaseMigratesWithAccountsFollowingTheirTenantAndEnabled) {
  ASSERT_TRUE(store_->AddAccount({"contoso", "A", "a@contoso.test", "h"}, 100).ok());
  TenantChange keys;
  keys.oauth_jwks = "/etc/chute/contoso-jwks.json";
  ASSERT_TRUE(store_->UpdateTenant("contoso", keys).ok());
  store_.reset();
  {
    // Back to what schema 3 had: no policy columns, no app access, the JWKS a file's column,
    // no notification address.
    absl::StatusOr<std::unique_ptr<db::Database>> db = db::Database::Open(dir_ + "/d.db", false);
    ASSERT_TRUE(db.ok());
    ASSERT_TRUE(
        (*db)->Exec("ALTER TABLE tenants RENAME COLUMN oauth_jwks TO oauth_jwks_file").ok());
    ASSERT_TRUE((*db)->Exec("ALTER TABLE tenants DROP COLUMN oauth_app_access").ok());
    ASSERT_TRUE((*db)->Exec("ALTER TABLE accounts DROP COLUMN basic_auth").ok());
    ASSERT_TRUE((*db)->Exec("ALTER TABLE accounts DROP COLUMN enabled").ok());
    ASSERT_TRUE((*db)->Exec("ALTER TABLE tenants DROP COLUMN notification_address").ok());
    ASSERT_TRUE((*db)->Exec("UPDATE schema_version SET version = 3").ok());
  }
  absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(dir_ + "/d.db", false);
  ASSERT_TRUE(store.ok()) << store.status();
  store_ = std::move(*store);
  std::shared_ptr<const Snapshot> snapshot = *store_->LoadSnapshot();
  const Account* a = snapshot->FindAccount("a@contoso.test");
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->basic_auth, std::nullopt);
  EXPECT_TRUE(a->enabled);
  EXPECT_EQ(snapshot->FindTenantByName("contoso")->oauth_app_access, AppAccess::kAny);
  EXPECT_EQ(snapshot->FindTenantByName("contoso")->oauth_jwks, "/etc/chute/contoso-jwks.json");
}

TEST_F(StoreTest, ATenantsNotificationAddressIsInOneOfItsDomains) {
  TenantChange set;
  set.notification_address = "Ops@Contoso.TEST";
  absl::StatusOr<Tenant> tenant = store_->UpdateTenant("contoso", set);
  ASSERT_TRUE(tenant.ok()) << tenant.status();
  EXPECT_EQ(tenant->notification_address, "Ops@contoso.test");
  EXPECT_EQ((*store_->LoadSnapshot())->FindTenantByName("contoso")->notification_address,
            "Ops@contoso.test");
  set.notification_address = "ops@elsewhere.test";
  absl::StatusOr<Tenant> outside = store_->UpdateTenant("contoso", set);
  ASSERT_FALSE(outside.ok());
  EXPECT_TRUE(absl::StrContains(outside.status().message(), "not an accepted domain"));
  set.notification_address = "";
  EXPECT_EQ(store_->UpdateTenant("contoso", set)->notification_address, "");
}

TEST_F(StoreTest, TwoWritersAtOnceNeverPassTheAccountCap) {
  // Two connections to one database, as two chutectl processes (or two operators) are: each
  // adds accounts as fast as it can; the cap is checked inside the writing transaction.
  absl::StatusOr<std::unique_ptr<Store>> other = Store::Open(dir_ + "/d.db", false);
  ASSERT_TRUE(other.ok()) << other.status();
  constexpr int kCap = 10;
  std::atomic<int> added{0};
  std::atomic<int> refused{0};
  auto writer = [&](Store* store, const std::string& prefix) {
    for (int i = 0; i < kCap; ++i) {
      std::string name = absl::StrCat(prefix, i);
      absl::StatusOr<Account> account =
          store->AddAccount({"contoso", name, name + "@contoso.test", ""}, kCap);
      if (account.ok()) {
        ++added;
      } else {
        EXPECT_EQ(account.status().code(), absl::StatusCode::kFailedPrecondition)
            << account.status();
        ++refused;
      }
    }
  };
  std::thread a(writer, store_.get(), "a");
  std::thread b(writer, other->get(), "b");
  a.join();
  b.join();
  EXPECT_EQ(added.load(), kCap);
  EXPECT_EQ(refused.load(), kCap);
  absl::StatusOr<std::shared_ptr<const Snapshot>> snapshot = store_->LoadSnapshot();
  ASSERT_TRUE(snapshot.ok());
  EXPECT_EQ((*snapshot)->accounts().size(), static_cast<size_t>(kCap));
}

TEST_F(StoreTest, ANewPrimaryAddressKeepsTheOldOneAsAnAlias) {
  ASSERT_TRUE(store_->AddAccount({"contoso", "App", "app@contoso.test", ""}, 100).ok());
  AccountChange change;
  change.primary_address = "app2@contoso.test";
  absl::StatusOr<Account> moved = store_->UpdateAccount("App", change);
  ASSERT_TRUE(moved.ok()) << moved.status();
  EXPECT_EQ(moved->primary_address, "app2@contoso.test");
  EXPECT_EQ(moved->aliases, std::vector<std::string>{"app@contoso.test"});
  absl::StatusOr<std::shared_ptr<const Snapshot>> snapshot = store_->LoadSnapshot();
  ASSERT_TRUE(snapshot.ok());
  // Devices still signing in (or sending) with the old address find the same account.
  EXPECT_EQ((*snapshot)->FindAccount("app@contoso.test")->id, moved->id);
  // Back to the old one: the alias is promoted, and the second address stays as an alias.
  change.primary_address = "APP@contoso.test";
  moved = store_->UpdateAccount("App", change);
  ASSERT_TRUE(moved.ok()) << moved.status();
  EXPECT_EQ(moved->primary_address, "APP@contoso.test");
  EXPECT_EQ(moved->aliases, std::vector<std::string>{"app2@contoso.test"});
}

TEST_F(StoreTest, AReplyToThatIsAnHveAccountsAddressIsRefused) {
  ASSERT_TRUE(store_->AddAccount({"contoso", "App", "app@contoso.test", ""}, 100).ok());
  ASSERT_TRUE(store_->AddAccount({"contoso", "Other", "other@contoso.test", ""}, 100).ok());
  ASSERT_TRUE(store_->UpdateAccount("App", WithAlias("alias@contoso.test")).ok());
  for (const char* own : {"app@contoso.test", "ALIAS@contoso.test", "other@contoso.test"}) {
    AccountChange change;
    change.reply_to = own;
    absl::StatusOr<Account> refused = store_->UpdateAccount("App", change);
    ASSERT_FALSE(refused.ok()) << own;
    EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(refused.status().message()), testing::HasSubstr("5.1.10")) << own;
  }
  AccountChange mailbox;
  mailbox.reply_to = "team@contoso.test";
  ASSERT_TRUE(store_->UpdateAccount("App", mailbox).ok());
  // And the other way: the Reply-To cannot become an HVE account's address afterwards.
  EXPECT_FALSE(store_->UpdateAccount("App", WithAlias("team@contoso.test")).ok());
  EXPECT_FALSE(store_->UpdateAccount("Other", WithAlias("team@contoso.test")).ok());
  EXPECT_FALSE(store_->AddAccount({"contoso", "Team", "team@contoso.test", ""}, 100).ok());
  // Other changes of the account still work.
  AccountChange rename;
  rename.display_name = "App 2";
  EXPECT_TRUE(store_->UpdateAccount("App", rename).ok());
}

}  // namespace
}  // namespace chute::directory
