#include "directory/directory.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

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
  EXPECT_EQ(account->primary_address, "App@Contoso.test");  // stored as given
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

}  // namespace
}  // namespace chute::directory
