// submission_test.cc: the Submission session handler without a shard: a real smtp::Session
// fed strings, a real directory snapshot, and fakes for the sink, the buffers, the tenant cap
// and the auth service.

#include "server/submission.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "server/server.h"
#include "smtp/session.h"

namespace chute::server {
namespace {

class FakeSink : public SubmitSink {
 public:
  bool ReserveSpool(const SpoolConfig& limits, uint64_t bytes, int messages) override {
    spool_limits_seen = limits.messages_max;
    if (full) {
      return false;
    }
    reserved_bytes += static_cast<int64_t>(bytes);
    reserved_messages += messages;
    return true;
  }
  void ReleaseSpool(uint64_t bytes, int messages) override {
    reserved_bytes -= static_cast<int64_t>(bytes);
    reserved_messages -= messages;
  }
  std::string NextQueueId() override { return "Q" + std::to_string(++ids); }
  void NoteReceiving(int delta) override { receiving += delta; }
  void Stage(spool::RecordPrefix prefix, std::span<const iovec> body, uint64_t body_bytes,
             uint64_t cookie) override {
    std::string content = prefix.bytes.substr(prefix.content_offset);
    for (const iovec& v : body) {
      content.append(static_cast<const char*>(v.iov_base), v.iov_len);
    }
    staged.push_back(content);
    staged_bytes = body_bytes;
    staged_cookie = cookie;
  }
  void Accepted(std::unique_ptr<delivery::QueuedMessage> message,
                const std::vector<int>& routes) override {
    accepted.push_back(std::move(message));
    accepted_routes.push_back(routes);
  }
  void CountUsage(const directory::Account& account, size_t recipients) override {
    usage[account.primary_address] += static_cast<int>(recipients);
  }
  bool Tracing() const override { return tracing; }
  void Trace(trace::Event event) override { traced.push_back(std::move(event)); }

  std::vector<std::vector<int>> accepted_routes;
  bool full = false;
  int64_t spool_limits_seen = -1;
  int64_t reserved_bytes = 0;
  int reserved_messages = 0;
  bool tracing = true;
  int ids = 0;
  int receiving = 0;
  std::vector<std::string> staged;
  uint64_t staged_bytes = 0;
  uint64_t staged_cookie = 0;
  std::vector<std::unique_ptr<delivery::QueuedMessage>> accepted;
  std::map<std::string, int> usage;
  std::vector<trace::Event> traced;
};

class FakeBuffers : public BodyBuffers {
 public:
  bool MayPin() const override { return may_pin; }
  void Pin(uint16_t) override { ++pins; }
  void Unpin(uint16_t) override { --pins; }
  bool ChargeBody(size_t bytes, int64_t max) override {
    if (charged + static_cast<int64_t>(bytes) > max) {
      return false;
    }
    charged += static_cast<int64_t>(bytes);
    return true;
  }
  void UnchargeBody(size_t bytes) override { charged -= static_cast<int64_t>(bytes); }
  bool BodyMemoryFull(int64_t max) const override { return charged >= max; }
  bool may_pin = true;
  int pins = 0;
  int64_t charged = 0;
};

// FakeTenantCap: a real in-process gate, and a fleet that answers at once or (pending) when
// the test calls Submission::OnTenantAdmitted.
class FakeTenantCap : public TenantCap {
 public:
  Verdict Admit(const directory::Account& account, uint64_t cookie, TenantPlace* place) override {
    ++asked;
    last_cookie = cookie;
    if (!room) {
      return Verdict::kOverCap;
    }
    gate.AdmitTenant(account.tenant_id, &place->local);
    if (pending) {
      return Verdict::kPending;
    }
    place->lease = next_lease++;
    return Verdict::kAdmitted;
  }
  void Leave(uint64_t lease) override {
    if (lease != 0) {
      left.push_back(lease);
    }
  }
  uint64_t Count(int64_t tenant_id) const { return gate.TenantCount(tenant_id); }
  bool room = true;
  bool pending = false;
  int asked = 0;
  uint64_t last_cookie = 0;
  uint64_t next_lease = 7;
  std::vector<uint64_t> left;
  policy::ConnectionGate gate{policy::ConnectionGate::Limits{}};
};

class FakeAuth : public AuthService {
 public:
  auth::AuthThrottle::Verdict CheckThrottle(const IpBytes&, absl::string_view, absl::Time,
                                            absl::string_view*) override {
    return throttle;
  }
  void RecordSuccess(const IpBytes&, absl::string_view, absl::Time) override { ++successes; }
  absl::Duration RecordFailure(const IpBytes&, absl::string_view, absl::Time) override {
    ++failures;
    return failure_delay;
  }
  bool VerifyPassword(auth::VerifyRequest request) override {
    requests.push_back(std::move(request));
    return true;
  }
  auth::TokenVerdict VerifyToken(int64_t, absl::string_view, const auth::TokenPolicy&, absl::Time,
                                 auth::TokenIdentity* identity_out, std::string*) override {
    *identity_out = identity;
    return token;
  }
  auth::AuthThrottle::Verdict throttle = auth::AuthThrottle::Verdict::kClean;
  absl::Duration failure_delay = absl::ZeroDuration();
  int failures = 0;
  int successes = 0;
  std::vector<auth::VerifyRequest> requests;
  auth::TokenVerdict token = auth::TokenVerdict::kInvalid;
  auth::TokenIdentity identity;
};

class FakeControl : public SessionControl {
 public:
  void StartTls() override { ++starttls; }
  absl::string_view TlsVersion() const override { return "TLSv1.3"; }
  bool PeerGone() const override { return peer_gone; }
  int starttls = 0;
  bool peer_gone = false;
};

// FakeRecipients: verdicts by address (missing: exists); `pending` addresses are probed.
struct FakeRecipients : RecipientCheck {
  std::optional<delivery::RecipientVerdict> VerifyRecipient(int route, const std::string& address,
                                                            uint64_t cookie) override {
    (void)route;
    asked.push_back(address);
    if (pending.contains(address)) {
      probe_cookies.push_back(cookie);
      return std::nullopt;
    }
    auto it = verdicts.find(address);
    return it != verdicts.end()
               ? it->second
               : delivery::RecipientVerdict{delivery::RecipientVerdict::Kind::kExists, "", false};
  }
  std::map<std::string, delivery::RecipientVerdict> verdicts;
  std::set<std::string> pending;
  std::vector<std::string> asked;
  std::vector<uint64_t> probe_cookies;
};

class SubmissionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir[] = "/tmp/chute-submission-XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    dir_ = dir;
    auto store = directory::Store::Open(dir_ + "/d.db", true);
    ASSERT_TRUE(store.ok());
    ASSERT_TRUE((*store)->AddTenant("contoso", {"contoso.test"}).ok());
    ASSERT_TRUE((*store)->AddAccount({"contoso", "App", "app@contoso.test", ""}, 100).ok());
    ASSERT_TRUE((*store)->AddAccount({"contoso", "Hve2", "hve2@contoso.test", ""}, 100).ok());
    directory::TenantChange oauth;
    oauth.oauth_issuer = "https://login.contoso.test/v2.0";
    ASSERT_TRUE((*store)->UpdateTenant("contoso", oauth).ok());
    auto snapshot = (*store)->LoadSnapshot();
    ASSERT_TRUE(snapshot.ok());
    snapshot_ = *snapshot;
    config_ = std::make_shared<Config>();
    config_->server.hostname = "relay.contoso.test";
    listener_.address = "127.0.0.1:587";
    listener_.tls = TlsMode::kImplicit;
    services_ = SubmissionServices{&sink_,    &buffers_, &cap_,    &auth_,      &counters_,
                                   &replies_, &now_,     &router_, &recipients_};
    submission_ = std::make_unique<Submission>(&services_, &control_);
  }
  void TearDown() override {
    session_.reset();
    submission_.reset();
    std::string command = "rm -rf '" + dir_ + "'";
    ASSERT_EQ(std::system(command.c_str()), 0);
  }

  // Open: a session inside TLS (an implicit-TLS listener), greeted and EHLO'd.
  void Open() {
    submission_->Begin(77, IpBytes{}, "192.0.2.7", &listener_, config_, snapshot_);
    smtp::SessionOptions options;
    options.tls_active = true;
    options.starttls_offered = false;
    session_ = std::make_unique<smtp::Session>(options, submission_.get());
    submission_->set_session(session_.get());
    session_->Start(now_);
    Send("EHLO client.contoso.test\r\n");
  }
  // Send: feeds `input` and returns what the session answered to it.
  std::string Send(absl::string_view input) {
    size_t taken = session_->Feed(input, now_);
    EXPECT_EQ(taken, input.size());
    return TakeOutput();
  }
  std::string TakeOutput() {
    std::string out;
    session_->SwapOutput(out);
    return out;
  }
  void AuthenticateAsApp() {
    std::string plain("\0app@contoso.test\0secret", 24);
    EXPECT_EQ(Send("AUTH PLAIN " + absl::Base64Escape(plain) + "\r\n"), "");
    ASSERT_EQ(auth_.requests.size(), 1u);
    EXPECT_TRUE(submission_->busy());  // the slot must not be freed while the check is out
    submission_->OnVerified(true);
    EXPECT_TRUE(absl::StartsWith(TakeOutput(), "235 2.7.0"));
  }

  // OpenTrusted: a trusted listener's session (tls = "none"), acting as app@contoso.test,
  // past its EHLO.
  void OpenTrusted() {
    listener_.tls = TlsMode::kNone;
    submission_->Begin(9, IpBytes{}, "127.0.0.1", &listener_, config_, snapshot_);
    submission_->ActAs(snapshot_->FindAccount("app@contoso.test"));
    smtp::SessionOptions options;
    options.tls_required = false;
    options.starttls_offered = false;
    session_ = std::make_unique<smtp::Session>(options, submission_.get());
    submission_->set_session(session_.get());
    session_->Start(now_);
    session_->MarkAuthenticated();
    Send("EHLO printer\r\n");
  }

  std::string dir_;
  std::shared_ptr<const directory::Snapshot> snapshot_;
  std::shared_ptr<Config> config_;
  ListenerConfig listener_;
  FakeSink sink_;
  FakeBuffers buffers_;
  FakeTenantCap cap_;
  FakeAuth auth_;
  FakeControl control_;
  ShardCounters counters_;
  ReplyCounts replies_;
  absl::Time now_ = absl::FromUnixSeconds(1'790'000'000);
  delivery::Router router_{Config{}};  // the default route only
  FakeRecipients recipients_;
  SubmissionServices services_;
  std::unique_ptr<Submission> submission_;
  std::unique_ptr<smtp::Session> session_;
};

TEST_F(SubmissionTest, MailBeforeAuthIsRefused) {
  Open();
  EXPECT_TRUE(absl::StartsWith(Send("MAIL FROM:<app@contoso.test>\r\n"), "530 5.7.57"));
  EXPECT_EQ(sink_.receiving, 0);
}

TEST_F(SubmissionTest, WrongPasswordIs535AndCountedWithTheThrottle) {
  Open();
  std::string plain("\0app@contoso.test\0wrong", 23);
  EXPECT_EQ(Send("AUTH PLAIN " + absl::Base64Escape(plain) + "\r\n"), "");
  ASSERT_EQ(auth_.requests.size(), 1u);
  EXPECT_EQ(auth_.requests[0].cookie, 77u);
  submission_->OnVerified(false);
  EXPECT_TRUE(absl::StartsWith(TakeOutput(), "535 5.7.3"));
  EXPECT_EQ(auth_.failures, 1);
  EXPECT_EQ(submission_->account(), nullptr);
}

TEST_F(SubmissionTest, AThrottledFailureIsAnsweredWhenDue) {
  Open();
  auth_.failure_delay = absl::Seconds(2);
  std::string plain("\0app@contoso.test\0wrong", 23);
  Send("AUTH PLAIN " + absl::Base64Escape(plain) + "\r\n");
  submission_->OnVerified(false);
  EXPECT_EQ(TakeOutput(), "");  // held back
  EXPECT_FALSE(submission_->AnswerDelayed(false));
  now_ += absl::Seconds(2);
  EXPECT_TRUE(submission_->AnswerDelayed(false));
  EXPECT_TRUE(absl::StartsWith(TakeOutput(), "535 5.7.3"));
}

TEST_F(SubmissionTest, AGoodTokenForAnotherAccountIs535AndCountedWithTheThrottle) {
  Open();
  auth_.token = auth::TokenVerdict::kOk;
  auth_.identity.delegated = true;
  auth_.identity.user = "app@contoso.test";
  auth_.identity.user_claim = "upn";
  auto xoauth2 = [](absl::string_view user) {
    return absl::StrCat("AUTH XOAUTH2 ",
                        absl::Base64Escape(absl::StrCat("user=", user,
                                                        "\x01"
                                                        "auth=Bearer a.b.c\x01\x01")),
                        "\r\n");
  };
  std::string reply = Send(xoauth2("hve2@contoso.test"));
  EXPECT_TRUE(absl::StartsWith(reply, "535 5.7.3 ")) << reply;
  EXPECT_EQ(auth_.failures, 1);
  EXPECT_EQ(submission_->account(), nullptr);
  EXPECT_TRUE(absl::StartsWith(Send(xoauth2("app@contoso.test")), "235 2.7.0"));
  EXPECT_EQ(submission_->account()->primary_address, "app@contoso.test");
}

TEST_F(SubmissionTest, TenantAtItsCapGets454AndStaysUnauthenticated) {
  Open();
  cap_.room = false;
  std::string plain("\0app@contoso.test\0secret", 24);
  Send("AUTH PLAIN " + absl::Base64Escape(plain) + "\r\n");
  submission_->OnVerified(true);
  EXPECT_TRUE(absl::StartsWith(TakeOutput(), "454 4.7.0"));
  EXPECT_EQ(submission_->account(), nullptr);
}

TEST_F(SubmissionTest, AnAuthThatWaitsForTheFleetIsAnsweredWhenItAnswers) {
  Open();
  cap_.pending = true;
  std::string plain("\0app@contoso.test\0secret", 24);
  Send("AUTH PLAIN " + absl::Base64Escape(plain) + "\r\n");
  submission_->OnVerified(true);
  EXPECT_EQ(TakeOutput(), "");  // no answer before the fleet's
  EXPECT_EQ(cap_.last_cookie, 77u);
  EXPECT_TRUE(submission_->busy());  // the slot must not be freed while the lease is out
  EXPECT_EQ(submission_->account(), nullptr);
  submission_->OnTenantAdmitted(true, 41);
  EXPECT_TRUE(absl::StartsWith(TakeOutput(), "235 2.7.0"));
  EXPECT_FALSE(submission_->busy());
  EXPECT_EQ(submission_->account()->primary_address, "app@contoso.test");
  submission_->End();
  EXPECT_EQ(cap_.left, std::vector<uint64_t>{41});  // the session's end gives the lease back
  EXPECT_EQ(cap_.Count(snapshot_->FindAccount("app@contoso.test")->tenant_id), 0u);
}

TEST_F(SubmissionTest, AFleetThatRefusesIs454AndGivesTheLocalPlaceBack) {
  Open();
  cap_.pending = true;
  int64_t tenant = snapshot_->FindAccount("app@contoso.test")->tenant_id;
  std::string plain("\0app@contoso.test\0secret", 24);
  Send("AUTH PLAIN " + absl::Base64Escape(plain) + "\r\n");
  submission_->OnVerified(true);
  EXPECT_EQ(cap_.Count(tenant), 1u);  // held locally while the fleet is asked
  submission_->OnTenantAdmitted(false, 0);
  EXPECT_TRUE(absl::StartsWith(TakeOutput(), "454 4.7.0"));
  EXPECT_EQ(submission_->account(), nullptr);
  EXPECT_EQ(cap_.Count(tenant), 0u);
  // The session stays and may try again.
  cap_.pending = false;
  Send("AUTH PLAIN " + absl::Base64Escape(plain) + "\r\n");
  submission_->OnVerified(true);
  EXPECT_TRUE(absl::StartsWith(TakeOutput(), "235 2.7.0"));
}

TEST_F(SubmissionTest, AnXoauth2ThatWaitsForTheFleetIsAnsweredWhenItAnswers) {
  Open();
  cap_.pending = true;
  auth_.token = auth::TokenVerdict::kOk;
  auth_.identity.delegated = true;
  auth_.identity.user = "app@contoso.test";
  auth_.identity.user_claim = "upn";
  std::string reply = Send(absl::StrCat("AUTH XOAUTH2 ",
                                        absl::Base64Escape("user=app@contoso.test\x01"
                                                           "auth=Bearer a.b.c\x01\x01"),
                                        "\r\n"));
  EXPECT_EQ(reply, "");
  submission_->OnTenantAdmitted(true, 5);
  EXPECT_TRUE(absl::StartsWith(TakeOutput(), "235 2.7.0"));
}

TEST_F(SubmissionTest, SendAsAnotherAddressIsRefused) {
  Open();
  AuthenticateAsApp();
  EXPECT_TRUE(absl::StartsWith(Send("MAIL FROM:<ceo@contoso.test>\r\n"), "550 5.7.60"));
}

TEST_F(SubmissionTest, FullSpoolIs452) {
  Open();
  AuthenticateAsApp();
  sink_.full = true;
  EXPECT_TRUE(absl::StartsWith(Send("MAIL FROM:<app@contoso.test>\r\n"), "452 4.3.1"));
  EXPECT_EQ(sink_.spool_limits_seen, config_->spool.messages_max);  // the session's limits
  EXPECT_EQ(sink_.receiving, 0);
}

TEST_F(SubmissionTest, MailReservesSpoolRoomUntilTheMessageEnds) {
  Open();
  AuthenticateAsApp();
  EXPECT_TRUE(absl::StartsWith(Send("MAIL FROM:<app@contoso.test> SIZE=1000\r\n"), "250"));
  EXPECT_EQ(sink_.reserved_bytes, 1000);
  EXPECT_EQ(sink_.reserved_messages, 1);
  EXPECT_TRUE(absl::StartsWith(Send("RSET\r\n"), "250"));
  EXPECT_EQ(sink_.reserved_bytes, 0);
  EXPECT_EQ(sink_.reserved_messages, 0);
  // Without SIZE=: the largest message allowed.
  EXPECT_TRUE(absl::StartsWith(Send("MAIL FROM:<app@contoso.test>\r\n"), "250"));
  EXPECT_EQ(sink_.reserved_bytes, config_->limits.message_size_bytes);
}

TEST_F(SubmissionTest, ABodyPastReceivingBytesMaxIsDroppedAndRefusedWith452) {
  Open();
  AuthenticateAsApp();
  buffers_.charged = config_->limits.receiving_bytes_max - 1;  // others hold nearly all
  EXPECT_TRUE(absl::StartsWith(Send("MAIL FROM:<app@contoso.test>\r\n"), "250"));
  EXPECT_TRUE(absl::StartsWith(Send("RCPT TO:<ann@contoso.test>\r\n"), "250"));
  EXPECT_TRUE(absl::StartsWith(Send("DATA\r\n"), "354"));
  std::string reply = Send("From: <app@contoso.test>\r\n\r\nhello\r\n.\r\n");
  EXPECT_TRUE(absl::StartsWith(reply, "452 4.3.1")) << reply;
  EXPECT_TRUE(sink_.staged.empty());
  EXPECT_EQ(buffers_.charged, config_->limits.receiving_bytes_max - 1);  // nothing kept
  EXPECT_EQ(sink_.reserved_bytes, 0);
  // At the bound, MAIL itself waits.
  buffers_.charged = config_->limits.receiving_bytes_max;
  EXPECT_TRUE(absl::StartsWith(Send("MAIL FROM:<app@contoso.test>\r\n"), "452 4.3.1"));
}

TEST_F(SubmissionTest, AMessageIsStagedThen250OnCommitAndHandedToDelivery) {
  Open();
  AuthenticateAsApp();
  EXPECT_TRUE(absl::StartsWith(Send("MAIL FROM:<app@contoso.test>\r\n"), "250"));
  EXPECT_EQ(sink_.receiving, 1);  // company for a group commit
  EXPECT_TRUE(absl::StartsWith(Send("RCPT TO:<ann@contoso.test>\r\n"), "250"));
  EXPECT_TRUE(absl::StartsWith(Send("RCPT TO:<ann@contoso.test>\r\n"), "250"));  // once
  EXPECT_TRUE(absl::StartsWith(Send("DATA\r\n"), "354"));
  EXPECT_EQ(Send("From: <app@contoso.test>\r\nSubject: hi\r\n\r\nhello\r\n.\r\n"), "");
  ASSERT_EQ(sink_.staged.size(), 1u);
  EXPECT_EQ(sink_.receiving, 0);
  EXPECT_EQ(sink_.staged_cookie, 77u);
  const std::string& content = sink_.staged[0];
  EXPECT_TRUE(absl::StartsWith(content, "Received: from client.contoso.test")) << content;
  EXPECT_TRUE(absl::StrContains(content, "Message-ID: <Q1@relay.contoso.test>"));
  EXPECT_TRUE(absl::StrContains(content, "Subject: hi\r\n\r\nhello\r\n"));
  EXPECT_TRUE(submission_->committing());

  spool::Committed committed;
  committed.cookie = 77;
  committed.ref.content_bytes = content.size();
  submission_->OnCommitted(&committed);
  EXPECT_EQ(TakeOutput(), "250 2.0.0 OK queued as Q1\r\n");
  EXPECT_FALSE(submission_->busy());
  ASSERT_EQ(sink_.accepted.size(), 1u);
  EXPECT_EQ(sink_.accepted[0]->id, "Q1");
  EXPECT_EQ(sink_.accepted[0]->sender, "app@contoso.test");
  EXPECT_EQ(sink_.accepted[0]->recipients, std::vector<std::string>{"ann@contoso.test"});
  EXPECT_EQ(sink_.accepted[0]->marks.size(), 1u);
  EXPECT_EQ(sink_.usage["app@contoso.test"], 1);
  ASSERT_EQ(sink_.traced.size(), 1u);
  EXPECT_EQ(sink_.traced[0].queue_id, "Q1");
}

TEST_F(SubmissionTest, WithTheTraceOffNoTraceEventIsMade) {
  sink_.tracing = false;
  Open();
  AuthenticateAsApp();
  Send("MAIL FROM:<app@contoso.test>\r\n");
  Send("RCPT TO:<ann@contoso.test>\r\n");
  Send("DATA\r\n");
  Send("From: app@contoso.test\r\n\r\nx\r\n.\r\n");
  spool::Committed committed;
  submission_->OnCommitted(&committed);
  EXPECT_TRUE(absl::StartsWith(TakeOutput(), "250 2.0.0"));
  EXPECT_EQ(sink_.accepted.size(), 1u);
  EXPECT_TRUE(sink_.traced.empty());
}

TEST_F(SubmissionTest, AFailedCommitIs451AndNothingIsDelivered) {
  Open();
  AuthenticateAsApp();
  Send("MAIL FROM:<app@contoso.test>\r\n");
  Send("RCPT TO:<ann@contoso.test>\r\n");
  Send("DATA\r\n");
  Send("From: app@contoso.test\r\n\r\nx\r\n.\r\n");
  submission_->OnCommitted(nullptr);
  EXPECT_TRUE(absl::StartsWith(TakeOutput(), "451"));
  EXPECT_TRUE(sink_.accepted.empty());
  EXPECT_TRUE(sink_.usage.empty());
}

TEST_F(SubmissionTest, HeaderFromOfAnotherAddressIsRefusedAfterTheData) {
  Open();
  AuthenticateAsApp();
  Send("MAIL FROM:<app@contoso.test>\r\n");
  Send("RCPT TO:<ann@contoso.test>\r\n");
  Send("DATA\r\n");
  EXPECT_TRUE(absl::StartsWith(Send("From: ceo@contoso.test\r\n\r\nx\r\n.\r\n"), "550 5.6.241"));
  EXPECT_TRUE(sink_.staged.empty());
  EXPECT_EQ(sink_.receiving, 0);
}

TEST_F(SubmissionTest, BodySlicesPinReceiveBuffersWithinTheBudgetAndReleaseThem) {
  Open();
  AuthenticateAsApp();
  Send("MAIL FROM:<app@contoso.test>\r\n");
  Send("RCPT TO:<ann@contoso.test>\r\n");
  Send("DATA\r\n");
  submission_->FeedingFrom(3);
  Send("From: app@contoso.test\r\n\r\nline one\r\n");
  EXPECT_EQ(buffers_.pins, 1);
  submission_->FeedingFrom(4);
  buffers_.may_pin = false;  // the shard's budget is spent: the rest is copied
  Send("line two\r\n");
  EXPECT_EQ(buffers_.pins, 1);
  Send(".\r\n");
  submission_->FeedingFrom(-1);
  ASSERT_EQ(sink_.staged.size(), 1u);
  EXPECT_TRUE(absl::StrContains(sink_.staged[0], "line one\r\nline two\r\n"));
  spool::Committed committed;
  submission_->OnCommitted(&committed);
  EXPECT_EQ(buffers_.pins, 0);  // given back once the record is on disk
}

TEST_F(SubmissionTest, EndReleasesTheMessageInProgress) {
  Open();
  AuthenticateAsApp();
  Send("MAIL FROM:<app@contoso.test>\r\n");
  Send("RCPT TO:<ann@contoso.test>\r\n");
  Send("DATA\r\n");
  submission_->FeedingFrom(5);
  Send("From: app@contoso.test\r\n\r\npartial");
  EXPECT_EQ(buffers_.pins, 1);
  session_.reset();
  submission_->End();
  EXPECT_EQ(buffers_.pins, 0);
  EXPECT_EQ(sink_.receiving, 0);
}

TEST_F(SubmissionTest, TrustedListenerActsAsItsAccountAndTakesTheTenantPlaceAtMail) {
  OpenTrusted();
  EXPECT_EQ(cap_.asked, 0);  // an idle trusted connection locks no one out
  EXPECT_TRUE(absl::StartsWith(Send("MAIL FROM:<app@contoso.test>\r\n"), "250"));
  EXPECT_EQ(cap_.asked, 1);
  Send("RSET\r\n");
  EXPECT_TRUE(absl::StartsWith(Send("MAIL FROM:<app@contoso.test>\r\n"), "250"));
  EXPECT_EQ(cap_.asked, 1);  // the place is the session's, not the message's
}

TEST_F(SubmissionTest, ATrustedSessionsFirstMailWaitsForTheFleet) {
  OpenTrusted();
  cap_.pending = true;
  EXPECT_EQ(Send("MAIL FROM:<app@contoso.test> SIZE=1000\r\n"), "");
  EXPECT_EQ(sink_.receiving, 0);
  submission_->OnTenantAdmitted(false, 0);
  EXPECT_TRUE(absl::StartsWith(TakeOutput(), "451 4.7.0"));  // kReplyTenantCapAtMail
  EXPECT_EQ(Send("MAIL FROM:<app@contoso.test> SIZE=1000\r\n"), "");
  submission_->OnTenantAdmitted(true, 9);
  EXPECT_TRUE(absl::StartsWith(TakeOutput(), "250"));
  EXPECT_EQ(sink_.receiving, 1);
  EXPECT_EQ(sink_.reserved_bytes, 1000);  // the MAIL's own SIZE, kept while it waited
  EXPECT_TRUE(absl::StartsWith(Send("RCPT TO:<ann@contoso.test>\r\n"), "250"));
}

using Kind = delivery::RecipientVerdict::Kind;

class RecipientVerificationTest : public SubmissionTest {
 protected:
  // UseRoutes: the default route with these settings (a fresh Router; services_ points to it).
  void UseDefaultRoute(DeliveryConfig settings) {
    Config config;
    config.delivery = settings;
    router_ = delivery::Router(config);
  }
  static DeliveryConfig VerifyingSmtp() {
    DeliveryConfig smtp;
    smtp.backend = DeliveryBackend::kSmtp;
    smtp.targets = {"127.0.0.1:25"};
    smtp.verify_recipients = true;
    return smtp;
  }
  void StartTransaction() {
    Open();
    AuthenticateAsApp();
    ASSERT_TRUE(absl::StartsWith(Send("MAIL FROM:<app@contoso.test>\r\n"), "250"));
  }
};

TEST_F(RecipientVerificationTest, AnUnknownRecipientIs550WithTheTargetsReasonAndNotKept) {
  DeliveryConfig smtp = VerifyingSmtp();
  UseDefaultRoute(smtp);
  recipients_.verdicts["gone@contoso.test"] = {
      Kind::kUnknown, "550 5.1.1 <gone@contoso.test>: Recipient address rejected: User unknown",
      false};
  recipients_.verdicts["old@contoso.test"] = {Kind::kUnknown, "553 sorry, no such user", true};
  StartTransaction();
  EXPECT_EQ(Send("RCPT TO:<gone@contoso.test>\r\n"),
            "550 5.1.1 <gone@contoso.test>: Recipient address rejected: User unknown\r\n");
  // The target's code is kept; a reason without an enhanced code gets 5.1.1.
  EXPECT_EQ(Send("RCPT TO:<old@contoso.test>\r\n"), "553 5.1.1 sorry, no such user\r\n");
  EXPECT_TRUE(absl::StartsWith(Send("RCPT TO:<ann@contoso.test>\r\n"), "250 2.1.5"));
  EXPECT_EQ(recipients_.asked, (std::vector<std::string>{"gone@contoso.test", "old@contoso.test",
                                                         "ann@contoso.test"}));
  EXPECT_TRUE(absl::StartsWith(Send("DATA\r\n"), "354"));
  EXPECT_EQ(Send("From: <app@contoso.test>\r\n\r\nhi\r\n.\r\n"), "");
  spool::Committed committed;
  submission_->OnCommitted(&committed);
  ASSERT_EQ(sink_.accepted.size(), 1u);
  EXPECT_EQ(sink_.accepted[0]->recipients, std::vector<std::string>{"ann@contoso.test"});
  EXPECT_EQ(sink_.accepted_routes[0], std::vector<int>{0});
}

TEST_F(RecipientVerificationTest, AMissingMaildirMailboxIs550NoSuchMailbox) {
  DeliveryConfig maildir;
  maildir.verify_recipients = true;
  UseDefaultRoute(maildir);
  recipients_.verdicts["gone@contoso.test"] = {Kind::kUnknown, "", false};
  StartTransaction();
  EXPECT_EQ(Send("RCPT TO:<gone@contoso.test>\r\n"),
            "550 5.1.1 Recipient address rejected: no such mailbox\r\n");
}

TEST_F(RecipientVerificationTest, AProbeAnswersLaterAndTheSlotStaysBusyMeanwhile) {
  DeliveryConfig smtp = VerifyingSmtp();
  UseDefaultRoute(smtp);
  recipients_.pending = {"new@contoso.test"};
  StartTransaction();
  // Pipelined: the second RCPT waits behind the first one's probe.
  std::string input = "RCPT TO:<new@contoso.test>\r\nRCPT TO:<ann@contoso.test>\r\n";
  size_t taken = session_->Feed(input, now_);
  EXPECT_EQ(taken, input.find("RCPT TO:<ann"));
  EXPECT_EQ(TakeOutput(), "");
  EXPECT_TRUE(submission_->busy());
  ASSERT_EQ(recipients_.probe_cookies, std::vector<uint64_t>{77});
  submission_->OnRecipientVerified({Kind::kExists, "250 2.1.5 Ok", false});
  EXPECT_FALSE(submission_->busy());
  EXPECT_EQ(TakeOutput(), "250 2.1.5 Recipient OK\r\n");
  // The session goes on with what it held once it is fed again.
  EXPECT_EQ(Send(input.substr(taken)), "250 2.1.5 Recipient OK\r\n");
  EXPECT_EQ(recipients_.asked, (std::vector<std::string>{"new@contoso.test", "ann@contoso.test"}));
}

TEST_F(RecipientVerificationTest, AnUnreachableTargetAcceptsOrDefersAsTheRouteSays) {
  DeliveryConfig smtp = VerifyingSmtp();
  UseDefaultRoute(smtp);
  recipients_.verdicts["x@contoso.test"] = {
      Kind::kUnreachable, "451 4.4.1 connect to 127.0.0.1:25: Connection refused", false};
  StartTransaction();
  EXPECT_TRUE(absl::StartsWith(Send("RCPT TO:<x@contoso.test>\r\n"), "250 2.1.5"));
  smtp.verify_unreachable = VerifyUnreachable::kDefer;
  UseDefaultRoute(smtp);
  EXPECT_TRUE(absl::StartsWith(Send("RSET\r\n"), "250"));
  ASSERT_TRUE(absl::StartsWith(Send("MAIL FROM:<app@contoso.test>\r\n"), "250"));
  EXPECT_EQ(Send("RCPT TO:<x@contoso.test>\r\n"),
            "450 4.1.1 Recipient address cannot be verified now, try again later\r\n");
}

TEST_F(RecipientVerificationTest, AnAnswerAfterTheClientLeftChangesNothing) {
  DeliveryConfig smtp = VerifyingSmtp();
  UseDefaultRoute(smtp);
  recipients_.pending = {"new@contoso.test"};
  StartTransaction();
  EXPECT_EQ(Send("RCPT TO:<new@contoso.test>\r\n"), "");
  control_.peer_gone = true;
  session_->PeerGone();
  EXPECT_TRUE(submission_->busy());  // the probe is out: the slot waits for its answer
  submission_->OnRecipientVerified({Kind::kExists, "250 ok", false});
  EXPECT_FALSE(submission_->busy());
  submission_->End();
}

}  // namespace
}  // namespace chute::server
