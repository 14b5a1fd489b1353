// hve_policy_test.cc: unit tests for the HVE sender, recipient, network and From rules.

#include "policy/hve_policy.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>

namespace chute::policy {
namespace {

// Designated initializers would trip -Wmissing-field-initializers.
inline directory::AccountChange WithAlias(std::string alias) {
  directory::AccountChange change;
  change.add_aliases = {std::move(alias)};
  return change;
}

class PolicyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir[] = "/tmp/chute-policy-XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    dir_ = dir;
    auto store = directory::Store::Open(dir_ + "/d.db", true);
    ASSERT_TRUE(store.ok());
    ASSERT_TRUE((*store)->AddTenant("contoso", {"contoso.test", "fabrikam.test"}).ok());
    ASSERT_TRUE((*store)->AddTenant("other", {"other.test"}).ok());
    ASSERT_TRUE((*store)->AddAccount({"contoso", "App", "app@contoso.test", ""}, 100).ok());
    ASSERT_TRUE((*store)->UpdateAccount("App", WithAlias("alias@fabrikam.test")).ok());
    ASSERT_TRUE((*store)->AddAccount({"contoso", "Hve2", "hve2@contoso.test", ""}, 100).ok());
    auto snapshot = (*store)->LoadSnapshot();
    ASSERT_TRUE(snapshot.ok());
    snapshot_ = *snapshot;
    account_ = snapshot_->FindAccount("app@contoso.test");
  }
  void TearDown() override {
    std::string command = "rm -rf '" + dir_ + "'";
    ASSERT_EQ(std::system(command.c_str()), 0);
  }

  std::string dir_;
  std::shared_ptr<const directory::Snapshot> snapshot_;
  const directory::Account* account_ = nullptr;
};

TEST_F(PolicyTest, SenderIsThePrimaryAddressOrAnAlias) {
  EXPECT_EQ(CheckSender(*account_, "APP@contoso.test"), std::nullopt);
  EXPECT_EQ(CheckSender(*account_, "alias@FABRIKAM.test"), std::nullopt);
  EXPECT_EQ(CheckSender(*account_, "hve2@contoso.test")->text, smtp::kReplySendAsDenied.text);
  EXPECT_EQ(CheckSender(*account_, "")->text, smtp::kReplySendAsDenied.text);
}

TEST_F(PolicyTest, Recipients) {
  std::string to;
  EXPECT_EQ(CheckRecipient(*snapshot_, *account_, "Bob@Fabrikam.TEST", &to), std::nullopt);
  EXPECT_EQ(to, "Bob@fabrikam.test");  // the local part as given, the domain as stored
  EXPECT_EQ(CheckRecipient(*snapshot_, *account_, "bob@other.test", &to)->text,
            smtp::kReplyRelayDenied.text);  // another tenant's domain is not ours
  EXPECT_EQ(CheckRecipient(*snapshot_, *account_, "HVE2@contoso.test", &to)->text,
            smtp::kReplyRecipientIsHve.text);
  EXPECT_EQ(CheckRecipient(*snapshot_, *account_, "alias@fabrikam.test", &to)->text,
            smtp::kReplyRecipientIsHve.text);
  EXPECT_EQ(CheckRecipient(*snapshot_, *account_, "postmaster", &to), std::nullopt);
  EXPECT_EQ(to, "postmaster@contoso.test");
}

TEST_F(PolicyTest, LookalikeDomainIsDeliveredToTheDomainItMapsTo) {
  // Fullwidth letters and a fullwidth full stop (U+FF0E) map to fabrikam.test (UTS #46): the
  // recipient is accepted, and delivered as bob@fabrikam.test, not under the raw spelling.
  std::string to;
  EXPECT_EQ(CheckRecipient(*snapshot_, *account_,
                           "Bob@\uff46\uff41\uff42\uff52\uff49\uff4b\uff41\uff4d.test", &to),
            std::nullopt);
  EXPECT_EQ(to, "Bob@fabrikam.test");
  EXPECT_EQ(CheckRecipient(*snapshot_, *account_, "carol@fabrikam\uff0etest", &to), std::nullopt);
  EXPECT_EQ(to, "carol@fabrikam.test");
  // An HVE account spelt with lookalikes is still an HVE account.
  EXPECT_EQ(CheckRecipient(*snapshot_, *account_, "hve2@contoso\uff0etest", &to)->text,
            smtp::kReplyRecipientIsHve.text);
}

TEST(AllowedNetworkTest, Cidrs) {
  std::vector<Cidr> networks = {*ParseCidr("127.0.0.0/8"), *ParseCidr("::1")};
  EXPECT_TRUE(IsAllowedNetwork(networks, *ParseIp("127.1.2.3")));
  EXPECT_TRUE(IsAllowedNetwork(networks, *ParseIp("::1")));
  EXPECT_FALSE(IsAllowedNetwork(networks, *ParseIp("10.0.0.1")));
  EXPECT_FALSE(IsAllowedNetwork({}, *ParseIp("127.0.0.1")));
}

TEST(HveHeaderFromTest, OnlyTheAccountsOwnAddressesPass) {
  directory::Account account;
  account.primary_address = "app@example.test";
  account.aliases = {"alias@example.test"};
  using V = std::vector<std::string>;
  EXPECT_FALSE(CheckHeaderFrom(account, 0, V{}, false).has_value());  // no From: at all
  EXPECT_FALSE(CheckHeaderFrom(account, 1, V{"APP@example.test"}, false).has_value());
  EXPECT_FALSE(CheckHeaderFrom(account, 1, V{"alias@example.test"}, false).has_value());
  EXPECT_EQ(CheckHeaderFrom(account, 1, V{"ceo@example.test"}, false)->text,
            smtp::kReplyFromMismatch.text);
  EXPECT_TRUE(CheckHeaderFrom(account, 1, V{"app@example.test", "ceo@example.test"}, false));
  EXPECT_TRUE(CheckHeaderFrom(account, 2, V{"app@example.test"}, false));  // two From: fields
  EXPECT_TRUE(CheckHeaderFrom(account, 1, V{}, false));                    // From: with nothing
  EXPECT_TRUE(CheckHeaderFrom(account, 1, V{"app@example.test"}, true));   // too long to check
}

// Designated initializers would trip -Wmissing-field-initializers.
auth::TokenIdentity Delegated(std::string user, std::string claim = "upn") {
  auth::TokenIdentity identity;
  identity.delegated = true;
  identity.user = std::move(user);
  identity.user_claim = std::move(claim);
  return identity;
}
auth::TokenIdentity AppOnly(std::string oid) {
  auth::TokenIdentity identity;
  identity.app_id = std::move(oid);
  return identity;
}

class TokenAccountTest : public PolicyTest {
 protected:
  std::optional<smtp::Reply> Check(const auth::TokenIdentity& identity) {
    return CheckTokenAccount(tenant_, account_copy_, identity, &why_);
  }
  void SetUp() override {
    PolicyTest::SetUp();
    tenant_ = *snapshot_->FindTenant(account_->tenant_id);
    account_copy_ = *account_;
  }
  directory::Tenant tenant_;
  directory::Account account_copy_;
  std::string why_;
};

constexpr absl::string_view kApp = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";

TEST_F(TokenAccountTest, ADelegatedTokenAuthenticatesOnlyTheAccountItsUserClaimNames) {
  EXPECT_EQ(Check(Delegated("app@contoso.test")), std::nullopt);
  EXPECT_EQ(Check(Delegated("APP@Contoso.TEST", "preferred_username")), std::nullopt);
  EXPECT_EQ(Check(Delegated("alias@fabrikam.test")), std::nullopt);  // an alias names it too
  // The measured attack: a token for another account of the tenant.
  EXPECT_EQ(Check(Delegated("hve2@contoso.test"))->text, smtp::kReplyAuthFailed.text);
  EXPECT_EQ(why_, "the token's upn is hve2@contoso.test");
  EXPECT_EQ(Check(Delegated("app@contoso.test.evil"))->text, smtp::kReplyAuthFailed.text);
  EXPECT_EQ(Check(Delegated("app"))->text, smtp::kReplyAuthFailed.text);
  EXPECT_EQ(Check(Delegated(""))->text, smtp::kReplyAuthFailed.text);
  EXPECT_EQ(why_, "a delegated token that names no user");
  // Its oid is the user's: never an application's.
  auth::TokenIdentity with_oid = Delegated("hve2@contoso.test");
  with_oid.app_id = std::string(kApp);
  account_copy_.allowed_apps = {std::string(kApp)};
  EXPECT_EQ(Check(with_oid)->text, smtp::kReplyAuthFailed.text);
}

TEST_F(TokenAccountTest, TheUserClaimIsComparedWithTheDomainInEitherIdnForm) {
  account_copy_.primary_address = "info@xn--bcher-kva.example";
  EXPECT_EQ(Check(Delegated("Info@bücher.example")), std::nullopt);
  EXPECT_EQ(Check(Delegated("info@XN--BCHER-KVA.example")), std::nullopt);
  EXPECT_EQ(Check(Delegated("info@bucher.example"))->text, smtp::kReplyAuthFailed.text);
}

TEST_F(TokenAccountTest, ADelegatedTokenIsRefusedWhereAnAppListApplies) {
  account_copy_.allowed_apps = {std::string(kApp)};
  EXPECT_EQ(Check(Delegated("app@contoso.test"))->text, smtp::kReplyAppNotAllowed.text);
  account_copy_.allowed_apps.clear();
  tenant_.oauth_app_access = directory::AppAccess::kListed;
  EXPECT_EQ(Check(Delegated("app@contoso.test"))->text, smtp::kReplyAppNotAllowed.text);
  // Someone else's token still gets the reply of an invalid one.
  EXPECT_EQ(Check(Delegated("hve2@contoso.test"))->text, smtp::kReplyAuthFailed.text);
}

TEST_F(TokenAccountTest, AnAppOnlyTokenNeedsItsOidInAllowedAppsOrAnEmptyListOnAnAnyTenant) {
  // The default tenant and an empty list: any app of the tenant, as HVE documents.
  EXPECT_EQ(Check(AppOnly(std::string(kApp))), std::nullopt);
  EXPECT_EQ(Check(AppOnly("")), std::nullopt);
  account_copy_.allowed_apps = {"12345678-0000-4000-8000-000000000000"};
  EXPECT_EQ(Check(AppOnly(std::string(kApp)))->text, smtp::kReplyAppNotAllowed.text);
  EXPECT_EQ(why_, absl::StrCat("the application ", kApp, " is not in the account's AllowedApps"));
  EXPECT_EQ(Check(AppOnly(""))->text, smtp::kReplyAppNotAllowed.text);
  EXPECT_EQ(Check(AppOnly("12345678-0000-4000-8000-000000000000")), std::nullopt);
  account_copy_.allowed_apps = {std::string(kApp)};
  EXPECT_EQ(Check(AppOnly("AAAAAAAA-BBBB-CCCC-DDDD-EEEEEEEEEEEE")), std::nullopt) << "any case";
  account_copy_.allowed_apps = {"12345678-0000-4000-8000-000000000000"};
  // A listed tenant: an empty list lets no app in; a list decides as before.
  tenant_.oauth_app_access = directory::AppAccess::kListed;
  EXPECT_EQ(Check(AppOnly("12345678-0000-4000-8000-000000000000")), std::nullopt);
  account_copy_.allowed_apps.clear();
  EXPECT_EQ(Check(AppOnly(std::string(kApp)))->text, smtp::kReplyAppNotAllowed.text);
}

}  // namespace
}  // namespace chute::policy
