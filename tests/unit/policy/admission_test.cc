// admission_test.cc: the verdict on a new connection from the caps, the listener's rules and
// the client's address.

#include "policy/admission.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

namespace chute::policy {
namespace {

class AdmissionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir[] = "/tmp/chute-admission-XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    dir_ = dir;
    auto store = directory::Store::Open(dir_ + "/d.db", true);
    ASSERT_TRUE(store.ok());
    ASSERT_TRUE((*store)->AddTenant("contoso", {"contoso.test"}).ok());
    ASSERT_TRUE((*store)->AddAccount({"contoso", "Printer", "printer@contoso.test", ""}, 100).ok());
    ASSERT_TRUE((*store)->AddAccount({"contoso", "Off", "off@contoso.test", ""}, 100).ok());
    directory::AccountChange disable;
    disable.enabled = false;
    ASSERT_TRUE((*store)->UpdateAccount("off@contoso.test", disable).ok());
    auto snapshot = (*store)->LoadSnapshot();
    ASSERT_TRUE(snapshot.ok());
    snapshot_ = *snapshot;
    trusted_.tls = TlsMode::kNone;
    trusted_.allowed_networks = {*ParseCidr("10.1.0.0/16")};
    trusted_.authenticate_as = "printer@contoso.test";
  }
  void TearDown() override {
    std::string command = "rm -rf '" + dir_ + "'";
    ASSERT_EQ(std::system(command.c_str()), 0);
  }
  static AdmissionFacts From(absl::string_view ip) {
    AdmissionFacts facts;
    facts.peer = *ParseIp(ip);
    return facts;
  }

  std::string dir_;
  std::shared_ptr<const directory::Snapshot> snapshot_;
  ListenerConfig submission_;  // STARTTLS, the default
  ListenerConfig trusted_;
};

TEST_F(AdmissionTest, ASubmissionListenerAdmitsAnyoneUnderTheCaps) {
  AdmissionVerdict v = Admit(From("203.0.113.9"), submission_, *snapshot_);
  EXPECT_FALSE(v.refusal.has_value());
  EXPECT_EQ(v.acting_as, nullptr);
}

TEST_F(AdmissionTest, ConnectionsMaxComesFirst) {
  AdmissionFacts facts = From("203.0.113.9");
  facts.under_connections_max = false;
  facts.ip = ConnectionGate::Verdict::kOverCap;
  AdmissionVerdict v = Admit(facts, submission_, *snapshot_);
  ASSERT_TRUE(v.refusal.has_value());
  EXPECT_EQ(v.refusal->text, smtp::kReplyConnectionsMax.text);
}

TEST_F(AdmissionTest, PerIpCapAndAFullTable) {
  AdmissionFacts facts = From("203.0.113.9");
  facts.ip = ConnectionGate::Verdict::kOverCap;
  EXPECT_EQ(Admit(facts, submission_, *snapshot_).refusal->text, smtp::kReplyIpCap.text);
  EXPECT_EQ(Admit(facts, submission_, *snapshot_).refusal->code, 421);
  facts.ip = ConnectionGate::Verdict::kTableFull;
  EXPECT_EQ(Admit(facts, submission_, *snapshot_).refusal->text, smtp::kReplyIpTableFull.text);
  facts.ip = ConnectionGate::Verdict::kExempt;
  EXPECT_FALSE(Admit(facts, submission_, *snapshot_).refusal.has_value());
}

TEST_F(AdmissionTest, TrustedListenerOnlyForItsNetworksAndActsAsItsAccount) {
  AdmissionVerdict inside = Admit(From("10.1.2.3"), trusted_, *snapshot_);
  EXPECT_FALSE(inside.refusal.has_value());
  ASSERT_NE(inside.acting_as, nullptr);
  EXPECT_EQ(inside.acting_as->primary_address, "printer@contoso.test");
  // The PROXY header's source is what counts: the shard passes it as the peer.
  AdmissionVerdict outside = Admit(From("10.2.0.1"), trusted_, *snapshot_);
  ASSERT_TRUE(outside.refusal.has_value());
  EXPECT_EQ(outside.refusal->text, smtp::kReplyNetworkNotAllowed.text);
  EXPECT_EQ(outside.acting_as, nullptr);
}

TEST_F(AdmissionTest, TrustedListenerWhoseAccountIsGoneIsMisconfigured) {
  trusted_.authenticate_as = "removed@contoso.test";
  AdmissionVerdict v = Admit(From("10.1.2.3"), trusted_, *snapshot_);
  ASSERT_TRUE(v.refusal.has_value());
  EXPECT_EQ(v.refusal->text, smtp::kReplyListenerMisconfigured.text);
}

TEST_F(AdmissionTest, TrustedListenerWhoseAccountIsDisabledActsAsNoOne) {
  trusted_.authenticate_as = "off@contoso.test";
  AdmissionVerdict v = Admit(From("10.1.2.3"), trusted_, *snapshot_);
  ASSERT_TRUE(v.refusal.has_value());
  EXPECT_EQ(v.refusal->text, smtp::kReplyListenerAccountDisabled.text);
  EXPECT_EQ(v.acting_as, nullptr);
}

}  // namespace
}  // namespace chute::policy
