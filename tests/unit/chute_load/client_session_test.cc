// client_session_test.cc: unit tests for chute-load's client session and message builder.

#include "tools/chute-load/client_session.h"

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tools/chute-load/message.h"

namespace chute::load {
namespace {

constexpr char kEhlo[] =
    "250-relay.example.test\r\n250-PIPELINING\r\n250-CHUNKING\r\n250-SIZE 10485760\r\n"
    "250-STARTTLS\r\n250 AUTH PLAIN LOGIN XOAUTH2\r\n";

class FakeSource : public JobSource {
 public:
  explicit FakeSource(uint64_t count) : count_(count) {}
  bool Take(int64_t now_us, Job* job, uint64_t* size_bytes) override {
    if (taken_ >= count_) {
      return false;
    }
    job->seq = taken_++;
    job->scheduled_us = scheduled_us >= 0 ? scheduled_us : now_us;
    *size_bytes = 300;
    return true;
  }
  bool Exhausted(int64_t) const override { return taken_ >= count_; }
  int64_t scheduled_us = -1;

 private:
  uint64_t count_;
  uint64_t taken_ = 0;
};

class ClientSessionTest : public testing::Test {
 protected:
  void SetUp() override {
    config_.from = "app@example.test";
    config_.to = {"u{n}@example.test"};
    config_.date = "Fri, 27 Nov 2026 09:00:00 +0000";
    config_.run_id = "run";
  }
  std::unique_ptr<ClientSession> Make(uint64_t jobs) {
    source_ = std::make_unique<FakeSource>(jobs);
    auto s = std::make_unique<ClientSession>(config_, source_.get(), &stats_);
    s->Start(0);
    return s;
  }
  // Sent: what the session wrote since the last call.
  static std::string Sent(ClientSession& s) {
    std::string out = *s.output();
    s.output()->clear();
    return out;
  }
  SessionConfig config_;
  Stats stats_;
  std::unique_ptr<FakeSource> source_;
};

TEST_F(ClientSessionTest, PipelinedMessageWithDataThenQuit) {
  config_.rcpts = 2;
  auto s = Make(1);
  s->OnInput("220 relay ESMTP\r\n", 1000);
  EXPECT_EQ(Sent(*s), "EHLO chute-load.localdomain\r\n");
  EXPECT_EQ(stats_.banner_us.max(), 1000u);
  s->OnInput(kEhlo, 2000);
  std::string envelope = Sent(*s);
  EXPECT_EQ(envelope,
            "MAIL FROM:<app@example.test>\r\nRCPT TO:<u0@example.test>\r\n"
            "RCPT TO:<u1@example.test>\r\nDATA\r\n")
      << "one pipelined group";
  s->OnInput("250 2.1.0 ok\r\n250 2.1.5 ok\r\n250 2.1.5 ok\r\n354 go\r\n", 3000);
  std::string body = Sent(*s);
  EXPECT_TRUE(absl::StartsWith(body, "From: <app@example.test>\r\n"));
  EXPECT_TRUE(absl::EndsWith(body, "\r\n.\r\n"));
  EXPECT_NE(body.find("\r\n..", 0), std::string::npos) << "dot-stuffed";
  EXPECT_NE(body.find("Message-ID: <0.run@chute-load>"), std::string::npos);
  s->OnInput("250 2.0.0 queued\r\n", 7000);
  EXPECT_EQ(stats_.messages.load(), 1u);
  EXPECT_EQ(stats_.recipients, 2u);
  EXPECT_EQ(stats_.data_us.max(), 4000u);
  EXPECT_EQ(Sent(*s), "QUIT\r\n") << "the source is exhausted";
  s->OnInput("221 bye\r\n", 8000);
  EXPECT_TRUE(s->done());
  EXPECT_TRUE(stats_.errors.empty());
  EXPECT_EQ(stats_.in_flight.load(), 0u);
}

TEST_F(ClientSessionTest, OpenLoopLatencyCountsFromTheScheduledTime) {
  auto s = Make(1);
  source_->scheduled_us = 500;  // due long before the session was ready to send it
  s->OnInput("220 r\r\n", 1000);
  s->OnInput(kEhlo, 2000);
  Sent(*s);
  s->OnInput("250 ok\r\n250 ok\r\n354 go\r\n250 ok\r\n", 9500);
  EXPECT_EQ(stats_.message_us.max(), 9000u);
  EXPECT_EQ(stats_.data_us.max(), 0u);
}

TEST_F(ClientSessionTest, BdatCarriesTheMessageWithItsCommand) {
  config_.bdat = true;
  auto s = Make(1);
  s->OnInput("220 r\r\n", 0);
  s->OnInput(kEhlo, 0);
  std::string sent = Sent(*s);
  size_t bdat = sent.find("BDAT ");
  ASSERT_NE(bdat, std::string::npos);
  size_t line_end = sent.find("\r\n", bdat);
  size_t size = std::stoul(sent.substr(bdat + 5, line_end - bdat - 5));
  EXPECT_EQ(sent.size() - line_end - 2, size) << "exactly the announced bytes follow";
  EXPECT_EQ(sent.find("\r\n.\r\n"), std::string::npos) << "no DATA terminator";
  s->OnInput("250 ok\r\n250 ok\r\n250 2.0.0 queued\r\n", 10);
  EXPECT_EQ(stats_.messages.load(), 1u);
}

TEST_F(ClientSessionTest, StartTlsThenAuthPlain) {
  config_.tls = TlsMode::kStartTls;
  config_.auth = AuthMech::kPlain;
  config_.user = "app@example.test";
  config_.secret = "pw";
  auto s = Make(0);
  s->OnInput("220 r\r\n", 0);
  Sent(*s);
  s->OnInput(kEhlo, 0);
  EXPECT_EQ(Sent(*s), "STARTTLS\r\n");
  s->OnInput("220 go ahead\r\n", 0);
  EXPECT_TRUE(s->wants_tls());
  EXPECT_EQ(Sent(*s), "") << "nothing in plaintext after STARTTLS";
  s->OnTlsDone(100);
  EXPECT_EQ(Sent(*s), "EHLO chute-load.localdomain\r\n");
  s->OnInput(kEhlo, 200);
  EXPECT_EQ(Sent(*s),
            absl::StrCat("AUTH PLAIN ",
                         absl::Base64Escape(std::string("\0app@example.test\0pw", 20)), "\r\n"));
  s->OnInput("235 2.7.0 Authentication successful\r\n", 700);
  EXPECT_EQ(stats_.auths, 1u);
  EXPECT_EQ(stats_.auth_us.max(), 500u);
  EXPECT_EQ(Sent(*s), "QUIT\r\n") << "no messages to send";
}

TEST_F(ClientSessionTest, AuthLoginAndXoauth2Strings) {
  config_.auth = AuthMech::kLogin;
  config_.user = "u@x.test";
  config_.secret = "pw";
  auto s = Make(0);
  s->OnInput("220 r\r\n", 0);
  Sent(*s);
  s->OnInput(kEhlo, 0);
  EXPECT_EQ(Sent(*s), "AUTH LOGIN\r\n");
  s->OnInput("334 VXNlcm5hbWU6\r\n", 0);
  EXPECT_EQ(Sent(*s), absl::StrCat(absl::Base64Escape("u@x.test"), "\r\n"));
  s->OnInput("334 UGFzc3dvcmQ6\r\n", 0);
  EXPECT_EQ(Sent(*s), absl::StrCat(absl::Base64Escape("pw"), "\r\n"));
  s->OnInput("235 ok\r\n", 0);
  EXPECT_EQ(stats_.auths, 1u);

  config_.auth = AuthMech::kXoauth2;
  config_.secret = "TOKEN";
  auto x = Make(0);
  x->OnInput("220 r\r\n", 0);
  Sent(*x);
  x->OnInput(kEhlo, 0);
  EXPECT_EQ(Sent(*x), absl::StrCat("AUTH XOAUTH2 ",
                                   absl::Base64Escape("user=u@x.test\x01"
                                                      "auth=Bearer TOKEN\x01\x01"),
                                   "\r\n"));
  // The error challenge is answered with an empty line; the final reply is what counts.
  x->OnInput("334 eyJzdGF0dXMiOiI0MDEifQ==\r\n", 0);
  EXPECT_EQ(Sent(*x), "\r\n");
  x->OnInput("535 5.7.3 Authentication unsuccessful\r\n", 0);
  EXPECT_EQ(stats_.errors["auth 535 5.7.3"], 1u);
  EXPECT_EQ(Sent(*x), "QUIT\r\n");
}

TEST_F(ClientSessionTest, RefusalsAreCountedByPhaseAndCode) {
  // A banner 421 (the per-IP cap) ends the session at once.
  auto s = Make(1);
  s->OnInput("421 4.7.0 Too many concurrent connections from this IP\r\n", 0);
  EXPECT_TRUE(s->done());
  EXPECT_EQ(stats_.errors["banner 421 4.7.0"], 1u);
  EXPECT_EQ(stats_.banners, 0u);

  // A 454 to AUTH (the tenant cap): counted, then QUIT.
  config_.auth = AuthMech::kPlain;
  config_.user = "u@x.test";
  config_.secret = "pw";
  auto t = Make(1);
  t->OnInput("220 r\r\n", 0);
  t->OnInput(kEhlo, 0);
  Sent(*t);
  t->OnInput("454 4.7.0 Too many authenticated connections for this tenant\r\n", 0);
  EXPECT_EQ(stats_.errors["auth 454 4.7.0"], 1u);
  EXPECT_EQ(Sent(*t), "QUIT\r\n");
}

TEST_F(ClientSessionTest, ARefusedRecipientIsCountedOnceNotItsConsequences) {
  config_.rcpts = 2;
  auto s = Make(5);
  s->OnInput("220 r\r\n", 0);
  s->OnInput(kEhlo, 0);
  Sent(*s);
  // One recipient refused, one accepted: the message still goes, and is counted.
  s->OnInput("250 ok\r\n550 5.7.54 Unable to relay\r\n250 ok\r\n354 go\r\n", 0);
  Sent(*s);
  s->OnInput("250 queued\r\n", 0);
  EXPECT_EQ(stats_.messages.load(), 1u);
  EXPECT_EQ(stats_.recipients, 1u);
  EXPECT_EQ(stats_.errors["rcpt 550 5.7.54"], 1u);
  EXPECT_EQ(Sent(*s), "QUIT\r\n") << "an unexpected reply ends the connection";

  // Every recipient refused: DATA's 554 is the consequence, not a second error.
  Stats fresh;
  stats_.errors.clear();
  auto t = Make(5);
  t->OnInput("220 r\r\n", 0);
  t->OnInput(kEhlo, 0);
  Sent(*t);
  t->OnInput("250 ok\r\n550 5.7.54 no\r\n550 5.7.54 no\r\n554 5.5.1 No valid recipients\r\n", 0);
  EXPECT_EQ(stats_.errors.size(), 1u);
  EXPECT_EQ(stats_.errors["rcpt 550 5.7.54"], 2u);
  EXPECT_EQ(Sent(*t), "QUIT\r\n");
}

TEST_F(ClientSessionTest, UnpipelinedWhenTheServerDoesNotOffer) {
  auto s = Make(1);
  s->OnInput("220 r\r\n", 0);
  s->OnInput("250-r\r\n250 SIZE 100\r\n", 0);
  EXPECT_EQ(Sent(*s), "EHLO chute-load.localdomain\r\nMAIL FROM:<app@example.test>\r\n");
  s->OnInput("250 ok\r\n", 0);
  EXPECT_EQ(Sent(*s), "RCPT TO:<u0@example.test>\r\n");
  s->OnInput("250 ok\r\n", 0);
  EXPECT_EQ(Sent(*s), "DATA\r\n");
}

TEST_F(ClientSessionTest, BrokenServersEndTheSessionAsProtocolErrors) {
  auto s = Make(1);
  s->OnInput(std::string(kReplyLineBytesMax + 10, '2') + "\r\n", 0);
  EXPECT_TRUE(s->done());
  EXPECT_EQ(stats_.errors["protocol reply line too long"], 1u);
  auto t = Make(1);
  t->OnInput("hello\r\n", 0);
  EXPECT_EQ(stats_.errors["protocol malformed reply"], 1u);
  auto u = Make(1);
  u->OnInput(std::string(kReplyLineBytesMax + 1, '2'), 0);  // no line end ever
  EXPECT_TRUE(u->done());
  // Plain text after the 220 to STARTTLS would be read as if it came over TLS: refused.
  config_.tls = TlsMode::kStartTls;
  auto w = Make(1);
  w->OnInput("220 r\r\n", 0);
  w->OnInput(kEhlo, 0);
  w->OnInput("220 go ahead\r\n250 injected\r\n", 0);
  EXPECT_TRUE(w->done());
  EXPECT_FALSE(w->wants_tls());
  EXPECT_EQ(stats_.errors["protocol data after the 220 to STARTTLS"], 1u);
  auto v = Make(1);
  v->OnInput("220 r\r\n", 0);
  v->OnInput("250 ok\r\n250 extra\r\n", 0);
  EXPECT_EQ(stats_.errors["protocol reply without a command"], 0u) << "MAIL pipelined";
}

TEST_F(ClientSessionTest, ClosedMidMessageIsCountedAndHoldWaitsForStop) {
  auto s = Make(1);
  s->OnInput("220 r\r\n", 0);
  s->OnInput(kEhlo, 0);
  EXPECT_EQ(stats_.in_flight.load(), 1u);
  s->OnClosed("closed", 0);
  EXPECT_EQ(stats_.errors["envelope closed"], 1u);
  EXPECT_EQ(stats_.in_flight.load(), 0u);

  config_.hold = true;
  auto h = Make(10);
  h->OnInput("220 r\r\n", 0);
  h->OnInput(kEhlo, 0);
  Sent(*h);
  EXPECT_TRUE(h->ready());
  h->Poke(0);
  EXPECT_EQ(Sent(*h), "") << "held sessions send nothing";
  h->Stop(0);
  EXPECT_EQ(Sent(*h), "QUIT\r\n");
  h->OnClosed("closed", 0);
  EXPECT_EQ(stats_.errors.count("quit closed"), 0u) << "closing after QUIT is normal";
}

TEST(MessageTest, SizeHeadersAndDotStuffing) {
  MessageHeaders headers{
      "a@x.test", {"b@x.test", "c@x.test"}, "Fri, 27 Nov 2026 09:00:00 +0000", "r1"};
  std::string m = BuildMessage(headers, 7, 10000);
  EXPECT_EQ(m.size(), 10000u);
  EXPECT_TRUE(absl::StrContains(m, "To: <b@x.test>, <c@x.test>\r\n"));
  EXPECT_TRUE(absl::StrContains(m, "Message-ID: <7.r1@chute-load>\r\n"));
  EXPECT_TRUE(absl::StrContains(m, "\r\n\r\n"));
  std::string small = BuildMessage(headers, 1, 10);
  EXPECT_TRUE(absl::EndsWith(small, "\r\n"));
}

}  // namespace
}  // namespace chute::load
