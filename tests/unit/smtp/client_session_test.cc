// Tests of smtp::ClientSession, the sans-I/O client session of delivery and chute-load: what it
// sends for each reply, and what it keeps of them, with the replies split at every byte.

#include "smtp/client_session.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace chute::smtp {
namespace {

// Takes what the session sent, as lines (a message's content stays in its lines).
std::vector<std::string> TakeLines(ClientSession* session) {
  std::vector<std::string> lines = absl::StrSplit(*session->output(), "\r\n");
  if (!lines.empty() && lines.back().empty()) {
    lines.pop_back();
  }
  session->output()->clear();
  return lines;
}

struct Recorder : ClientObserver {
  void OnReply(ClientCommand command, const ServerReply& reply, int64_t /*now_us*/) override {
    seen.push_back(absl::StrCat(ClientCommandName(command), " ", reply.code));
  }
  std::vector<std::string> seen;
};

ClientConfig Config(bool lmtp = false) {
  ClientConfig config;
  config.lmtp = lmtp;
  config.helo_name = "relay.test";
  return config;
}

ClientTransaction Transaction(std::vector<std::string> rcpts, absl::string_view content,
                              bool bdat = false) {
  ClientTransaction t;
  t.mail = "MAIL FROM:<app@example.test>";
  for (const std::string& rcpt : rcpts) {
    t.rcpts.push_back(absl::StrCat("RCPT TO:<", rcpt, ">"));
  }
  t.content = content;
  t.bdat = bdat;
  return t;
}

// A whole pipelined session, as the server answers it, fed at every split point: the same
// commands go out and the same replies are kept wherever the bytes were cut.
TEST(ClientSessionTest, APipelinedSessionSplitAtEveryByte) {
  const std::string greeting = "220 mx.test ESMTP\r\n";
  const std::string ehlo = "250-mx.test\r\n250-PIPELINING\r\n250 SIZE 1000\r\n";
  const std::string envelope =
      "250 2.1.0 ok\r\n250 2.1.5 ok\r\n550-5.1.1 no such\r\n550 5.1.1 user\r\n354 go\r\n";
  const std::string end = "250 2.0.0 queued as X\r\n";
  const std::string quit = "221 bye\r\n";
  // What the server says between two acts of the client: after the greeting and EHLO the
  // client begins a transaction; after its end it quits.
  const std::vector<std::string> segments = {greeting + ehlo, envelope + end, quit};
  size_t total = 0;
  for (const std::string& segment : segments) {
    total += segment.size();
  }
  const std::string content = "Subject: t\r\n\r\n.dot\r\n";
  for (size_t split = 0; split <= total; ++split) {
    SCOPED_TRACE(split);
    ClientConfig config = Config();
    Recorder recorder;
    ClientSession session(config, &recorder);
    std::vector<std::string> sent;
    auto take = [&] {
      for (std::string& line : TakeLines(&session)) {
        sent.push_back(std::move(line));
      }
    };
    size_t offset = 0;  // of the segment in the whole conversation
    for (size_t k = 0; k < segments.size(); ++k) {
      absl::string_view segment(segments[k]);
      size_t cut = split < offset ? 0 : std::min(split - offset, segment.size());
      for (absl::string_view piece : {segment.substr(0, cut), segment.substr(cut)}) {
        if (!piece.empty()) {
          session.OnInput(piece, 0);
          take();
        }
      }
      offset += segment.size();
      if (k == 0) {
        ASSERT_TRUE(session.ready());
        session.Begin(Transaction({"a@x.test", "b@x.test"}, content), 0);
      } else if (k == 1) {
        ASSERT_TRUE(session.ready());
        session.Quit();
      }
      take();
    }
    ASSERT_TRUE(session.protocol_error().empty()) << session.protocol_error();
    EXPECT_TRUE(session.closed());
    EXPECT_EQ(sent, (std::vector<std::string>{"EHLO relay.test", "MAIL FROM:<app@example.test>",
                                              "RCPT TO:<a@x.test>", "RCPT TO:<b@x.test>", "DATA",
                                              "Subject: t", "", "..dot", ".", "QUIT"}));
    const ClientReplies& replies = session.replies();
    EXPECT_TRUE(replies.MailAccepted());
    EXPECT_EQ(replies.Accepted(), std::vector<size_t>{0});
    ASSERT_TRUE(replies.rcpts[1].has_value());
    EXPECT_EQ(replies.rcpts[1]->ToString(), "550 5.1.1 no such user");
    ASSERT_EQ(replies.final.size(), 1u);
    EXPECT_EQ(replies.final[0].ToString(), "250 2.0.0 queued as X");
    EXPECT_FALSE(session.needs_reset());
    EXPECT_TRUE(session.capabilities().pipelining);
    EXPECT_EQ(session.capabilities().size_bytes_max, 1000u);
    EXPECT_EQ(recorder.seen,
              (std::vector<std::string>{"greeting 220", "ehlo 250", "mail 250", "rcpt 250",
                                        "rcpt 550", "data 354", "end-of-data 250", "quit 221"}));
  }
}

// Drives a session to ready on a server with `extensions`.
void Greet(ClientSession* session, absl::string_view extensions) {
  session->OnInput("220 mx\r\n", 0);
  EXPECT_EQ(TakeLines(session).size(), 1u);
  session->OnInput(absl::StrCat("250-mx\r\n", extensions, "250 8BITMIME\r\n"), 0);
}

TEST(ClientSessionTest, LmtpHasOneReplyPerAcceptedRecipientAfterTheData) {
  ClientConfig config = Config(/*lmtp=*/true);
  ClientSession session(config);
  session.OnInput("220 lmtp\r\n", 0);
  EXPECT_EQ(TakeLines(&session), std::vector<std::string>{"LHLO relay.test"});
  session.OnInput("250-lmtp\r\n250 PIPELINING\r\n", 0);
  ASSERT_TRUE(session.ready());
  session.Begin(Transaction({"a@x", "b@x", "c@x"}, "x\r\n"), 0);
  EXPECT_EQ(TakeLines(&session).size(), 5u);
  session.OnInput("250 ok\r\n250 ok\r\n550 5.1.1 no\r\n250 ok\r\n354 go\r\n", 0);
  EXPECT_EQ(TakeLines(&session), (std::vector<std::string>{"x", "."}));
  EXPECT_TRUE(session.waiting());
  session.OnInput("250 2.0.0 a ok\r\n", 0);
  EXPECT_FALSE(session.ready()) << "c's reply is still owed";
  session.OnInput("452 4.2.2 c over quota\r\n", 0);
  ASSERT_TRUE(session.ready());
  EXPECT_EQ(session.replies().Accepted(), (std::vector<size_t>{0, 2}));
  ASSERT_EQ(session.replies().final.size(), 2u);
  EXPECT_EQ(session.replies().final[1].ToString(), "452 4.2.2 c over quota");
}

TEST(ClientSessionTest, StepwiseARefusedMailSendsNoRcpt) {
  ClientConfig config = Config();
  ClientSession session(config);
  Greet(&session, "");
  ASSERT_TRUE(session.ready());
  EXPECT_FALSE(session.capabilities().pipelining);
  session.Begin(Transaction({"a@x", "b@x"}, "x\r\n"), 0);
  EXPECT_EQ(TakeLines(&session), std::vector<std::string>{"MAIL FROM:<app@example.test>"});
  session.OnInput("550 5.7.1 sender refused\r\n", 0);
  EXPECT_TRUE(TakeLines(&session).empty());
  EXPECT_TRUE(session.ready());
  EXPECT_FALSE(session.needs_reset()) << "a refused MAIL opened no transaction";
  EXPECT_FALSE(session.replies().rcpts[0].has_value());
}

TEST(ClientSessionTest, StepwiseNoAcceptedRecipientSendsNoDataAndNeedsReset) {
  ClientConfig config = Config();
  ClientSession session(config);
  Greet(&session, "");
  session.Begin(Transaction({"a@x", "b@x"}, "x\r\n"), 0);
  TakeLines(&session);
  session.OnInput("250 ok\r\n", 0);
  EXPECT_EQ(TakeLines(&session), std::vector<std::string>{"RCPT TO:<a@x>"});
  session.OnInput("550 no\r\n", 0);
  EXPECT_EQ(TakeLines(&session), std::vector<std::string>{"RCPT TO:<b@x>"});
  session.OnInput("550 no\r\n", 0);
  EXPECT_TRUE(TakeLines(&session).empty());
  ASSERT_TRUE(session.ready());
  EXPECT_TRUE(session.needs_reset());
  session.Reset();
  EXPECT_EQ(TakeLines(&session), std::vector<std::string>{"RSET"});
  EXPECT_FALSE(session.ready());
  session.OnInput("250 ok\r\n", 0);
  EXPECT_TRUE(session.ready());
  EXPECT_FALSE(session.needs_reset());
}

TEST(ClientSessionTest, StepwiseCanStopAtTheFirstRefusedRecipient) {
  ClientConfig config = Config();
  config.pipelining = false;
  config.stepwise_stops_at_refusal = true;
  ClientSession session(config);
  Greet(&session, "250-PIPELINING\r\n");
  session.Begin(Transaction({"a@x", "b@x"}, "x\r\n"), 0);
  EXPECT_EQ(TakeLines(&session).size(), 1u) << "pipelining = false: one command at a time";
  session.OnInput("250 ok\r\n", 0);
  EXPECT_EQ(TakeLines(&session), std::vector<std::string>{"RCPT TO:<a@x>"});
  session.OnInput("550 no\r\n", 0);
  EXPECT_TRUE(TakeLines(&session).empty());
  EXPECT_TRUE(session.ready());
  EXPECT_TRUE(session.needs_reset());
}

TEST(ClientSessionTest, PipelinedBdatGoesWithTheEnvelopeAndARefusalNeedsReset) {
  ClientConfig config = Config();
  ClientSession session(config);
  Greet(&session, "250-PIPELINING\r\n250-CHUNKING\r\n");
  session.Begin(Transaction({"a@x"}, "line", /*bdat=*/true), 7);
  EXPECT_EQ(*session.output(),
            "MAIL FROM:<app@example.test>\r\nRCPT TO:<a@x>\r\nBDAT 6 LAST\r\nline\r\n");
  EXPECT_TRUE(session.replies().content_sent);
  EXPECT_EQ(session.replies().content_sent_us, 7);
  session.output()->clear();
  session.OnInput("250 ok\r\n250 ok\r\n554 5.6.0 bad\r\n", 0);
  ASSERT_TRUE(session.ready());
  ASSERT_EQ(session.replies().final.size(), 1u);
  EXPECT_TRUE(session.needs_reset()) << "RFC 3030: a refused BDAT is reset";
}

TEST(ClientSessionTest, PipelinedDataAfterNoAcceptedRecipientGetsAnEmptyMessage) {
  ClientConfig config = Config();
  ClientSession session(config);
  Greet(&session, "250-PIPELINING\r\n");
  session.Begin(Transaction({"a@x"}, "secret\r\n"), 0);
  TakeLines(&session);
  session.OnInput("250 ok\r\n550 no\r\n354 go\r\n", 0);
  EXPECT_EQ(TakeLines(&session), std::vector<std::string>{"."}) << "never the content";
  session.OnInput("554 no valid recipients\r\n", 0);
  EXPECT_TRUE(session.ready());
  EXPECT_FALSE(session.needs_reset()) << "the empty message ended the transaction";
  EXPECT_FALSE(session.replies().content_sent);
}

TEST(ClientSessionTest, AProbeSendsNoDataAndNeedsReset) {
  ClientConfig config = Config();
  ClientSession session(config);
  Greet(&session, "250-PIPELINING\r\n");
  ClientTransaction probe;
  probe.mail = "MAIL FROM:<>";
  probe.rcpts = {"RCPT TO:<a@x>"};
  session.Begin(std::move(probe), 0);
  EXPECT_EQ(TakeLines(&session), (std::vector<std::string>{"MAIL FROM:<>", "RCPT TO:<a@x>"}));
  session.OnInput("250 ok\r\n550 5.1.1 unknown\r\n", 0);
  ASSERT_TRUE(session.ready());
  EXPECT_TRUE(session.needs_reset());
  EXPECT_EQ(session.replies().rcpts[0]->code, 550);
}

TEST(ClientSessionTest, StartTlsWaitsForTheHandshakeAndForgetsWhatWasLearnt) {
  ClientConfig config = Config();
  config.tls = ClientTls::kRequired;
  ClientSession session(config);
  Greet(&session, "250-STARTTLS\r\n250-PIPELINING\r\n");
  EXPECT_EQ(TakeLines(&session), std::vector<std::string>{"STARTTLS"});
  session.OnInput("220 go ahead\r\n", 0);
  EXPECT_TRUE(session.wants_tls());
  EXPECT_FALSE(session.waiting());
  session.OnTlsDone();
  EXPECT_EQ(TakeLines(&session), std::vector<std::string>{"EHLO relay.test"});
  EXPECT_FALSE(session.capabilities().pipelining);
  session.OnInput("250-mx\r\n250 STARTTLS\r\n", 0);
  EXPECT_TRUE(session.ready()) << "STARTTLS is not asked twice";
  EXPECT_TRUE(TakeLines(&session).empty());
}

TEST(ClientSessionTest, PlainTextAfterTheStartTlsReplyIsRefused) {
  for (const char* after : {"250 injected\r\n", "2"}) {
    ClientConfig config = Config();
    config.tls = ClientTls::kIfOffered;
    ClientSession session(config);
    Greet(&session, "250-STARTTLS\r\n");
    TakeLines(&session);
    session.OnInput(absl::StrCat("220 go ahead\r\n", after), 0);
    EXPECT_TRUE(session.closed()) << after;
    EXPECT_EQ(session.protocol_error(), "data after the 220 to STARTTLS");
  }
}

TEST(ClientSessionTest, StartTlsNotOfferedOrRefused) {
  {
    ClientConfig config = Config();
    config.tls = ClientTls::kRequired;
    ClientSession session(config);
    Greet(&session, "");
    ASSERT_EQ(session.phase(), ClientSession::Phase::kRefused);
    EXPECT_EQ(session.refusal().command, ClientCommand::kStartTls);
    EXPECT_EQ(session.refusal().why, "STARTTLS not offered");
  }
  {
    ClientConfig config = Config();
    config.tls = ClientTls::kRequired;
    ClientSession session(config);
    Greet(&session, "250-STARTTLS\r\n");
    session.OnInput("454 4.7.0 not now\r\n", 0);
    ASSERT_EQ(session.phase(), ClientSession::Phase::kRefused);
    EXPECT_EQ(session.refusal().reply->code, 454);
  }
  {
    ClientConfig config = Config();
    config.tls = ClientTls::kIfOffered;
    ClientSession session(config);
    Greet(&session, "250-STARTTLS\r\n");
    session.OnInput("454 4.7.0 not now\r\n", 0);
    EXPECT_TRUE(session.ready()) << "opportunistic: on in plain text";
    EXPECT_TRUE(session.tls_refused());
  }
}

TEST(ClientSessionTest, A421EndsTheSessionAndKeepsWhatCameBefore) {
  ClientConfig config = Config();
  ClientSession session(config);
  Greet(&session, "250-PIPELINING\r\n");
  session.Begin(Transaction({"a@x", "b@x"}, "x\r\n"), 0);
  TakeLines(&session);
  session.OnInput("250 ok\r\n250 ok\r\n421 4.3.2 shutting down\r\n", 0);
  EXPECT_TRUE(session.closed());
  EXPECT_FALSE(session.waiting());
  ASSERT_TRUE(session.closing_reply().has_value());
  EXPECT_EQ(session.closing_reply()->ToString(), "421 4.3.2 shutting down");
  EXPECT_TRUE(session.replies().rcpts[0].has_value());
  EXPECT_FALSE(session.replies().rcpts[1].has_value());
}

TEST(ClientSessionTest, EhloRefusedFallsBackToHeloUnlessToldNot) {
  {
    ClientConfig config = Config();
    ClientSession session(config);
    session.OnInput("220 old\r\n", 0);
    TakeLines(&session);
    session.OnInput("502 what\r\n", 0);
    EXPECT_EQ(TakeLines(&session), std::vector<std::string>{"HELO relay.test"});
    session.OnInput("250 old\r\n", 0);
    EXPECT_TRUE(session.ready());
  }
  {
    ClientConfig config = Config();
    config.helo_fallback = false;
    ClientSession session(config);
    session.OnInput("220 old\r\n502 what\r\n", 0);
    EXPECT_EQ(session.phase(), ClientSession::Phase::kRefused);
    EXPECT_EQ(session.refusal().command, ClientCommand::kHello);
  }
  {
    ClientConfig config = Config(/*lmtp=*/true);
    ClientSession session(config);
    session.OnInput("220 lmtp\r\n502 what\r\n", 0);
    EXPECT_EQ(session.phase(), ClientSession::Phase::kRefused) << "LMTP has no HELO";
  }
}

TEST(ClientSessionTest, QuitWithRepliesOwedWaitsForThemAndNeverAnswersA354) {
  {
    ClientConfig config = Config();
    ClientSession session(config);
    Greet(&session, "250-PIPELINING\r\n");
    session.Begin(Transaction({"a@x"}, "secret\r\n"), 0);
    TakeLines(&session);
    session.Quit();
    EXPECT_TRUE(TakeLines(&session).empty()) << "QUIT would be read as the message";
    session.OnInput("250 ok\r\n250 ok\r\n354 go\r\n", 0);
    EXPECT_TRUE(TakeLines(&session).empty()) << "neither the content nor a \".\"";
    EXPECT_TRUE(session.closed());
  }
  {
    ClientConfig config = Config();
    config.auth = ClientAuth::kPlain;
    config.user = "u";
    config.secret = "p";
    ClientSession session(config);
    Greet(&session, "");
    TakeLines(&session);  // AUTH PLAIN
    session.Quit();
    session.OnInput("235 ok\r\n", 0);
    EXPECT_EQ(session.phase(), ClientSession::Phase::kQuit) << "not ready again";
    EXPECT_EQ(TakeLines(&session), std::vector<std::string>{"QUIT"});
    session.OnInput("221 bye\r\n", 0);
    EXPECT_TRUE(session.closed());
  }
}

TEST(ClientSessionTest, GreetingRefused) {
  ClientConfig config = Config();
  ClientSession session(config);
  session.OnInput("554 5.7.1 go away\r\n", 0);
  ASSERT_EQ(session.phase(), ClientSession::Phase::kRefused);
  EXPECT_EQ(session.refusal().command, ClientCommand::kGreeting);
  session.Quit();
  EXPECT_EQ(TakeLines(&session), std::vector<std::string>{"QUIT"});
  session.OnInput("221 bye\r\n", 0);
  EXPECT_TRUE(session.closed());
  EXPECT_TRUE(session.protocol_error().empty());
}

TEST(ClientSessionTest, WhatIsNotSmtpIsAProtocolError) {
  struct Case {
    std::string input;
    ReplyError kind;
    std::string error;
  };
  for (const Case& c : std::vector<Case>{
           {"220 a\r\n250 b\r\n250 c\r\n", ReplyError::kNone, "reply without a command"},
           {"hello\r\n", ReplyError::kMalformed, ""},
           {std::string(5000, '2'), ReplyError::kLineTooLong, ""},
           {"220-a\r\n221 b\r\n", ReplyError::kCodeChanged, ""}}) {
    ClientConfig config = Config();
    ClientSession session(config);
    session.OnInput(c.input, 0);
    EXPECT_TRUE(session.closed()) << c.input;
    EXPECT_EQ(session.protocol_error_kind(), c.kind) << c.input;
    EXPECT_FALSE(session.protocol_error().empty());
    if (!c.error.empty()) {
      EXPECT_EQ(session.protocol_error(), c.error);
    }
  }
}

TEST(ClientSessionTest, AuthLoginAnswersBothChallengesAndXoauth2ItsErrorChallenge) {
  {
    ClientConfig config = Config();
    config.auth = ClientAuth::kLogin;
    config.user = "u";
    config.secret = "p";
    ClientSession session(config);
    Greet(&session, "250-AUTH LOGIN\r\n");
    EXPECT_EQ(session.phase(), ClientSession::Phase::kAuth);
    EXPECT_EQ(TakeLines(&session), std::vector<std::string>{"AUTH LOGIN"});
    session.OnInput("334 VXNlcm5hbWU6\r\n", 0);
    EXPECT_EQ(TakeLines(&session), std::vector<std::string>{"dQ=="});
    session.OnInput("334 UGFzc3dvcmQ6\r\n", 0);
    EXPECT_EQ(TakeLines(&session), std::vector<std::string>{"cA=="});
    session.OnInput("235 2.7.0 ok\r\n", 0);
    EXPECT_TRUE(session.ready());
  }
  {
    ClientConfig config = Config();
    config.auth = ClientAuth::kXoauth2;
    config.user = "u";
    config.secret = "t";
    ClientSession session(config);
    Greet(&session, "");
    TakeLines(&session);
    session.OnInput("334 eyJzdGF0dXMiOiI0MDEifQ==\r\n", 0);
    EXPECT_EQ(TakeLines(&session), std::vector<std::string>{""});
    session.OnInput("535 5.7.8 bad token\r\n", 0);
    ASSERT_EQ(session.phase(), ClientSession::Phase::kRefused);
    EXPECT_EQ(session.refusal().reply->code, 535);
  }
}

TEST(ClientSessionTest, LongInputIsFedInBoundedPieces) {
  // A server that answers a pipelined burst at once: many replies in one input are fine.
  ClientConfig config = Config();
  ClientSession session(config);
  Greet(&session, "250-PIPELINING\r\n");
  std::vector<std::string> rcpts(2000, "a@x");
  ClientTransaction probe;
  probe.mail = "MAIL FROM:<>";
  for (const std::string& rcpt : rcpts) {
    probe.rcpts.push_back(absl::StrCat("RCPT TO:<", rcpt, ">"));
  }
  session.Begin(std::move(probe), 0);
  std::string answers = "250 ok\r\n";
  for (size_t i = 0; i < rcpts.size(); ++i) {
    answers += "250 ok\r\n";
  }
  session.OnInput(answers, 0);
  EXPECT_TRUE(session.protocol_error().empty()) << session.protocol_error();
  EXPECT_TRUE(session.ready());
  EXPECT_EQ(session.replies().Accepted().size(), rcpts.size());
}

}  // namespace
}  // namespace chute::smtp
