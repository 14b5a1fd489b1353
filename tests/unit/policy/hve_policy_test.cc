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

}  // namespace
}  // namespace chute::policy
