// session_test.cc: unit tests for smtp::Session, command by command and transaction by transaction.

#include "smtp/session.h"

#include <gtest/gtest.h>

#include <memory>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "smtp/reply.h"
#include "tests/unit/smtp/session_harness.h"

namespace chute::smtp {
namespace {

using testing::Drive;
using testing::RecordingHandler;
using testing::TestTime;

constexpr absl::string_view kPlainCredentials =
    "AGFwcEBleGFtcGxlLnRlc3QAc2VjcmV0";  // \0app@..\0secret

class SessionTest : public ::testing::Test {
 protected:
  static SessionOptions TlsOptions() {
    SessionOptions options;
    options.hostname = "mx.example.test";
    options.tls_active = true;  // most tests run "inside TLS"; STARTTLS has its own tests
    return options;
  }

  void Open(SessionOptions options = TlsOptions()) {
    session_ = std::make_unique<Session>(std::move(options), &handler_);
    session_->Start(TestTime());
    greeting_ = Take();
  }

  // OpenAuthenticated: EHLO and AUTH PLAIN done.
  void OpenAuthenticated(SessionOptions options = TlsOptions()) {
    Open(std::move(options));
    Run("EHLO client.test\r\n");
    ASSERT_EQ(Run(absl::StrCat("AUTH PLAIN ", kPlainCredentials, "\r\n")),
              "235 2.7.0 Authentication successful\r\n");
    handler_.events.clear();
  }

  std::string Run(absl::string_view input, size_t piece_bytes = 0) {
    return Drive(*session_, handler_, input, piece_bytes);
  }

  std::string Take() {
    std::string out;
    session_->SwapOutput(out);
    return out;
  }

  RecordingHandler handler_;
  std::unique_ptr<Session> session_;
  std::string greeting_;
};

constexpr absl::string_view kEnvelope =
    "MAIL FROM:<app@example.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n";
constexpr absl::string_view kEnvelopeReplies =
    "250 2.1.0 Sender OK\r\n250 2.1.5 Recipient OK\r\n354 Start mail input; end with "
    "<CRLF>.<CRLF>\r\n";
constexpr absl::string_view kAccepted = "250 2.0.0 Message accepted for delivery\r\n";

TEST_F(SessionTest, GreetingNamesTheHost) {
  Open();
  EXPECT_EQ(greeting_, "220 mx.example.test ESMTP chute\r\n");
}

TEST_F(SessionTest, EhloBeforeTlsOffersStartTlsAndNotAuth) {
  SessionOptions options = TlsOptions();
  options.tls_active = false;
  Open(options);
  EXPECT_EQ(Run("EHLO client.test\r\n"),
            "250-mx.example.test\r\n250-SIZE 10485760\r\n250-PIPELINING\r\n"
            "250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250-CHUNKING\r\n250-DSN\r\n"
            "250 STARTTLS\r\n");
}

TEST_F(SessionTest, EhloInsideTlsOffersAuthAndNotStartTls) {
  Open();
  EXPECT_EQ(Run("ehlo client.test\r\n"),
            "250-mx.example.test\r\n250-SIZE 10485760\r\n250-PIPELINING\r\n"
            "250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250-CHUNKING\r\n250-DSN\r\n"
            "250 AUTH PLAIN LOGIN XOAUTH2\r\n");
}

TEST_F(SessionTest, EhloAdvertisesTheConfiguredSize) {
  SessionOptions options = TlsOptions();
  options.message_size_bytes = 1234;
  Open(options);
  EXPECT_NE(Run("EHLO c\r\n").find("250-SIZE 1234\r\n"), std::string::npos);
}

TEST_F(SessionTest, EhloAfterAuthDoesNotOfferAuthAgain) {
  OpenAuthenticated();
  EXPECT_EQ(Run("EHLO again\r\n").find("AUTH"), std::string::npos);
}

TEST_F(SessionTest, HeloAndMissingArguments) {
  Open();
  EXPECT_EQ(Run("HELO client.test\r\n"), "250 mx.example.test\r\n");
  EXPECT_EQ(Run("EHLO\r\n"), "501 5.5.4 Syntax: EHLO hostname\r\n");
  EXPECT_EQ(Run("HELO   \r\n"), "501 5.5.4 Syntax: EHLO hostname\r\n");
}

TEST_F(SessionTest, SimpleCommands) {
  Open();
  EXPECT_EQ(Run("NOOP\r\n"), "250 2.0.0 OK\r\n");
  EXPECT_EQ(Run("noop anything\r\n"), "250 2.0.0 OK\r\n");
  EXPECT_EQ(Run("RSET\r\n"), "250 2.0.0 Reset OK\r\n");
  EXPECT_EQ(Run("RSET now\r\n"), "501 5.5.4 Syntax error in parameters or arguments\r\n");
  EXPECT_EQ(Run("VRFY bob\r\n"),
            "252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery\r\n");
  EXPECT_EQ(Run("VRFY\r\n"), "501 5.5.4 Syntax error in parameters or arguments\r\n");
  EXPECT_EQ(Run("EXPN staff\r\n"), "502 5.5.1 Command not implemented\r\n");
  EXPECT_EQ(Run("HELP\r\n").substr(0, 10), "214 2.0.0 ");
  EXPECT_EQ(Run("FOO bar\r\n"), "500 5.5.2 Command unrecognized\r\n");
  EXPECT_EQ(Run("\r\n"), "500 5.5.2 Command unrecognized\r\n");
  EXPECT_FALSE(session_->closed());
  EXPECT_EQ(Run("QUIT\r\n"), "221 2.0.0 Bye\r\n");
  EXPECT_TRUE(session_->closed());
  EXPECT_EQ(Run("NOOP\r\n"), "");
}

TEST_F(SessionTest, TlsRequiredBeforeAuthAndMail) {
  SessionOptions options = TlsOptions();
  options.tls_active = false;
  Open(options);
  Run("EHLO c\r\n");
  const std::string tls_first = "530 5.7.0 Must issue a STARTTLS command first\r\n";
  EXPECT_EQ(Run(absl::StrCat("AUTH PLAIN ", kPlainCredentials, "\r\n")), tls_first);
  EXPECT_EQ(Run("MAIL FROM:<app@example.test>\r\n"), tls_first);
  EXPECT_EQ(Run("RCPT TO:<bob@example.test>\r\n"), tls_first);
  EXPECT_EQ(Run("DATA\r\n"), tls_first);
  EXPECT_TRUE(handler_.events.empty());
}

TEST_F(SessionTest, AuthRequiredBeforeMailRcptDataBdat) {
  Open();
  Run("EHLO c\r\n");
  const std::string not_auth = "530 5.7.57 Client not authenticated to send mail\r\n";
  EXPECT_EQ(Run("MAIL FROM:<app@example.test>\r\n"), not_auth);
  EXPECT_EQ(Run("RCPT TO:<bob@example.test>\r\n"), not_auth);
  EXPECT_EQ(Run("DATA\r\n"), not_auth);
  EXPECT_EQ(Run("BDAT 3 LAST\r\nabc"), not_auth);
  EXPECT_EQ(Run("NOOP\r\n"), "250 2.0.0 OK\r\n");  // the BDAT chunk was consumed
  EXPECT_TRUE(handler_.events.empty());
}

TEST_F(SessionTest, MailNeedsEhloFirst) {
  Open();
  session_->MarkAuthenticated();
  EXPECT_EQ(Run("MAIL FROM:<a@example.test>\r\n"), "503 5.5.1 Send EHLO or HELO first\r\n");
}

TEST_F(SessionTest, TrustedSessionSendsWithoutTlsOrAuth) {
  SessionOptions options;
  options.starttls_offered = false;
  options.tls_required = false;
  Open(options);
  session_->MarkAuthenticated();
  std::string ehlo = Run("EHLO c\r\n");
  EXPECT_EQ(ehlo.find("STARTTLS"), std::string::npos);
  EXPECT_EQ(ehlo.find("AUTH"), std::string::npos);
  EXPECT_EQ(Run(absl::StrCat(kEnvelope, "hi\r\n.\r\n")), absl::StrCat(kEnvelopeReplies, kAccepted));
  EXPECT_EQ(Run("STARTTLS\r\n"), "502 5.5.1 STARTTLS is not offered on this listener\r\n");
  EXPECT_EQ(Run("AUTH PLAIN\r\n"), "503 5.5.1 Already authenticated\r\n");
}

TEST_F(SessionTest, FullTransactionWithDotUnstuffing) {
  OpenAuthenticated();
  EXPECT_EQ(Run(absl::StrCat(kEnvelope, "Subject: t\r\n\r\n..leading dot\r\n..\r\nlast\r\n.\r\n")),
            absl::StrCat(kEnvelopeReplies, kAccepted));
  ASSERT_EQ(handler_.messages.size(), 1u);
  EXPECT_EQ(handler_.messages[0], "Subject: t\r\n\r\n.leading dot\r\n.\r\nlast\r\n");
  EXPECT_EQ(handler_.events, (std::vector<std::string>{"MAIL <app@example.test>",
                                                       "RCPT <bob@example.test>", "BODY", "END"}));
  EXPECT_FALSE(session_->in_transaction());
}

TEST_F(SessionTest, EmptyBody) {
  OpenAuthenticated();
  EXPECT_EQ(Run(absl::StrCat(kEnvelope, ".\r\n")), absl::StrCat(kEnvelopeReplies, kAccepted));
  ASSERT_EQ(handler_.messages.size(), 1u);
  EXPECT_EQ(handler_.messages[0], "");
}

TEST_F(SessionTest, VerbsCaseInsensitiveAndLocalPartsPreserved) {
  OpenAuthenticated();
  EXPECT_EQ(Run("mail from:<App.Sender@Example.TEST>\r\nRcPt To:<\"Odd Local\"@Example.test>\r\n"
                "rcpt to:<PostMaster>\r\n"),
            "250 2.1.0 Sender OK\r\n250 2.1.5 Recipient OK\r\n250 2.1.5 Recipient OK\r\n");
  EXPECT_EQ(handler_.events,
            (std::vector<std::string>{"MAIL <App.Sender@Example.TEST>",
                                      "RCPT <\"Odd Local\"@Example.test>", "RCPT <PostMaster>"}));
}

TEST_F(SessionTest, MailSyntaxErrors) {
  OpenAuthenticated();
  EXPECT_EQ(Run("MAIL app@example.test\r\n"),
            "501 5.5.4 Syntax error in parameters or arguments\r\n");
  EXPECT_EQ(Run("MAIL FROM:app@example.test\r\n"), "501 5.1.7 Bad sender address syntax\r\n");
  EXPECT_EQ(Run("MAIL FROM:<app@@example.test>\r\n"), "501 5.1.7 Bad sender address syntax\r\n");
  EXPECT_EQ(Run("MAIL FROM:<app@example.test> BOGUS=1\r\n"), "555 5.5.4 Unsupported parameter\r\n");
  EXPECT_EQ(Run("MAIL FROM:<app@example.test> BODY=BINARYMIME\r\n"),
            "555 5.5.4 Unsupported parameter\r\n");
  EXPECT_EQ(Run("MAIL FROM:<app@example.test> AUTH=a+0Ab\r\n"),
            "501 5.5.2 Control character in parameter\r\n");
  EXPECT_EQ(Run("MAIL FROM:<j\xC3\xB8rn@example.test>\r\n"),
            "553 5.6.7 Non-ASCII address requires SMTPUTF8\r\n");
  EXPECT_TRUE(handler_.events.empty());
}

TEST_F(SessionTest, MailParametersAccepted) {
  OpenAuthenticated();
  EXPECT_EQ(Run("MAIL FROM:<j\xC3\xB8rn@example.test> SIZE=100 BODY=8BITMIME SMTPUTF8 AUTH=<>\r\n"
                "RCPT TO:<b\xC3\xB8@example.test>\r\n"),
            "250 2.1.0 Sender OK\r\n250 2.1.5 Recipient OK\r\n");
  EXPECT_EQ(handler_.events[0], "MAIL <j\xC3\xB8rn@example.test> SIZE SMTPUTF8");
}

TEST_F(SessionTest, NullSenderIsPassedToPolicy) {
  OpenAuthenticated();
  handler_.mail_replies.push_back(kReplySendAsDenied);
  EXPECT_EQ(Run("MAIL FROM:<>\r\n"),
            "550 5.7.60 Client does not have permissions to send as this sender\r\n");
  EXPECT_EQ(handler_.events[0], "MAIL <>");
  EXPECT_FALSE(session_->in_transaction());
  EXPECT_EQ(Run("RCPT TO:<b@example.test>\r\n"), "503 5.5.1 Need MAIL command\r\n");
}

TEST_F(SessionTest, SequenceErrors) {
  OpenAuthenticated();
  EXPECT_EQ(Run("RCPT TO:<b@example.test>\r\n"), "503 5.5.1 Need MAIL command\r\n");
  EXPECT_EQ(Run("DATA\r\n"), "503 5.5.1 Need MAIL command\r\n");
  EXPECT_EQ(Run("MAIL FROM:<app@example.test>\r\n"), "250 2.1.0 Sender OK\r\n");
  EXPECT_EQ(Run("MAIL FROM:<app@example.test>\r\n"), "503 5.5.1 Sender already specified\r\n");
  EXPECT_EQ(Run("DATA\r\n"), "554 5.5.1 No valid recipients\r\n");
  EXPECT_EQ(Run("DATA now\r\n"), "501 5.5.4 Syntax error in parameters or arguments\r\n");
  EXPECT_EQ(Run("AUTH PLAIN\r\n"), "503 5.5.1 Already authenticated\r\n");
}

TEST_F(SessionTest, RsetAndEhloAbortTheTransaction) {
  OpenAuthenticated();
  Run("MAIL FROM:<app@example.test>\r\nRSET\r\n");
  Run("MAIL FROM:<app@example.test>\r\nEHLO again\r\n");
  EXPECT_EQ(handler_.events, (std::vector<std::string>{"MAIL <app@example.test>", "ABORT",
                                                       "MAIL <app@example.test>", "ABORT"}));
  EXPECT_EQ(Run("RCPT TO:<b@example.test>\r\n"), "503 5.5.1 Need MAIL command\r\n");
}

TEST_F(SessionTest, PolicyRejectionsAreRelayedAndCountAsErrorsNotRecipients) {
  SessionOptions options = TlsOptions();
  options.recipients_per_message = 2;
  OpenAuthenticated(options);
  handler_.rcpt_replies = {kReplyRelayDenied, kReplyRecipientOk, kReplyRecipientIsHve,
                           kReplyRecipientOk};
  EXPECT_EQ(Run("MAIL FROM:<app@example.test>\r\nRCPT TO:<x@elsewhere.test>\r\n"
                "RCPT TO:<a@example.test>\r\nRCPT TO:<hve@example.test>\r\n"
                "RCPT TO:<b@example.test>\r\nRCPT TO:<c@example.test>\r\n"),
            "250 2.1.0 Sender OK\r\n"
            "550 5.7.54 Unable to relay recipient in non-accepted domain\r\n"
            "250 2.1.5 Recipient OK\r\n"
            "550 5.1.10 Recipient not found: HVE accounts have no mailbox\r\n"
            "250 2.1.5 Recipient OK\r\n"
            "452 4.5.3 Too many recipients\r\n");
  EXPECT_EQ(session_->recipients(), 2u);
  // Refusals count toward errors_per_session (Postfix's hard error limit); the session's own
  // 452 for the recipient over the limit does not.
  EXPECT_EQ(session_->errors(), 2u);
}

TEST_F(SessionTest, RefusedRecipientsReachTheErrorLimitAndClose) {
  SessionOptions options = TlsOptions();
  options.errors_per_session = 3;
  OpenAuthenticated(options);
  handler_.rcpt_replies = {kReplyRelayDenied, kReplyRelayDenied, kReplyRelayDenied,
                           kReplyRelayDenied};
  EXPECT_EQ(Run("MAIL FROM:<app@example.test>\r\nRCPT TO:<x@elsewhere.test>\r\n"
                "RCPT TO:<y@elsewhere.test>\r\nRCPT TO:<z@elsewhere.test>\r\n"
                "RCPT TO:<w@elsewhere.test>\r\n"),
            "250 2.1.0 Sender OK\r\n"
            "550 5.7.54 Unable to relay recipient in non-accepted domain\r\n"
            "550 5.7.54 Unable to relay recipient in non-accepted domain\r\n"
            "550 5.7.54 Unable to relay recipient in non-accepted domain\r\n"
            "421 4.7.0 Too many errors\r\n");
  EXPECT_TRUE(session_->closed());
}

TEST_F(SessionTest, RecipientLimitAtBelowAndAbove) {
  OpenAuthenticated();
  std::string input = "MAIL FROM:<app@example.test>\r\n";
  for (int i = 1; i <= 51; ++i) {
    absl::StrAppend(&input, "RCPT TO:<user", i, "@example.test>\r\n");
  }
  std::string out = Run(input);
  size_t ok = 0;
  for (size_t pos = 0; (pos = out.find("250 2.1.5", pos)) != std::string::npos; ++pos) {
    ++ok;
  }
  EXPECT_EQ(ok, 50u);
  EXPECT_TRUE(absl::EndsWith(out, "250 2.1.5 Recipient OK\r\n452 4.5.3 Too many recipients\r\n"));
  EXPECT_EQ(session_->recipients(), 50u);
  EXPECT_EQ(handler_.events.size(), 51u);  // MAIL + 50 RCPT: the 51st never reached policy
}

TEST_F(SessionTest, SizeParameterAtAndAboveTheLimit) {
  SessionOptions options = TlsOptions();
  options.message_size_bytes = 1000;
  OpenAuthenticated(options);
  const std::string too_big = "552 5.3.4 Message size exceeds fixed maximum message size\r\n";
  EXPECT_EQ(Run("MAIL FROM:<a@example.test> SIZE=1001\r\n"), too_big);
  EXPECT_EQ(Run("MAIL FROM:<a@example.test> SIZE=99999999999999999999999999999\r\n"), too_big);
  EXPECT_EQ(Run("MAIL FROM:<a@example.test> SIZE=1x\r\n"),
            "501 5.5.4 Syntax error in parameters or arguments\r\n");
  EXPECT_EQ(Run("MAIL FROM:<a@example.test> SIZE=1000\r\n"), "250 2.1.0 Sender OK\r\n");
}

std::string BodyOfBytes(size_t bytes) {
  // Lines of 100 octets (98 + CR LF), then a short last line.
  std::string body;
  while (body.size() + 100 <= bytes) {
    body += std::string(98, 'x') + "\r\n";
  }
  body += std::string(bytes - body.size(), 'y');
  return body;
}

TEST_F(SessionTest, BodySizeLimitAtAndAbove) {
  SessionOptions options = TlsOptions();
  options.message_size_bytes = 5000;
  OpenAuthenticated(options);
  std::string at_limit = BodyOfBytes(4998) + "\r\n";  // 5000 octets of content
  EXPECT_EQ(Run(absl::StrCat(kEnvelope, at_limit, ".\r\n")),
            absl::StrCat(kEnvelopeReplies, kAccepted));
  EXPECT_EQ(handler_.messages.back().size(), 5000u);
  std::string over = BodyOfBytes(4999) + "\r\n";
  handler_.events.clear();
  EXPECT_EQ(Run(absl::StrCat(kEnvelope, over, ".\r\n"), 7),
            absl::StrCat(kEnvelopeReplies,
                         "552 5.3.4 Message size exceeds fixed maximum message size\r\n"));
  EXPECT_LE(handler_.body.size(), 5000u);  // never more than the limit was handed over
  EXPECT_EQ(handler_.events.back(), "ABORT");
  EXPECT_EQ(Run("NOOP\r\n"), "250 2.0.0 OK\r\n");
}

TEST_F(SessionTest, TextLineLimitInData) {
  OpenAuthenticated();
  std::string line_1000 = std::string(998, 'a') + "\r\n";
  EXPECT_EQ(Run(absl::StrCat(kEnvelope, line_1000, ".\r\n")),
            absl::StrCat(kEnvelopeReplies, kAccepted));
  std::string line_1001 = std::string(999, 'a') + "\r\n";
  EXPECT_EQ(
      Run(absl::StrCat(kEnvelope, line_1001, "more\r\n.\r\n")),
      absl::StrCat(kEnvelopeReplies, "554 5.6.0 Message has a text line over 1000 octets\r\n"));
  EXPECT_EQ(handler_.messages.size(), 1u);
}

TEST_F(SessionTest, CommandLineLimit) {
  Open();
  std::string at_limit = "NOOP " + std::string(kCommandLineBytesMax - 7, 'x') + "\r\n";
  ASSERT_EQ(at_limit.size(), kCommandLineBytesMax);
  EXPECT_EQ(Run(at_limit), "250 2.0.0 OK\r\n");
  EXPECT_EQ(Run(at_limit, 5), "250 2.0.0 OK\r\n");
  std::string over = "NOOP " + std::string(kCommandLineBytesMax - 6, 'x') + "\r\n";
  EXPECT_EQ(Run(over), "500 5.5.2 Line too long\r\n");
  EXPECT_EQ(Run(over + "NOOP\r\n", 3), "500 5.5.2 Line too long\r\n250 2.0.0 OK\r\n");
  std::string huge = std::string(100000, 'x') + "\r\nNOOP\r\n";
  EXPECT_EQ(Run(huge, 4096), "500 5.5.2 Line too long\r\n250 2.0.0 OK\r\n");
}

TEST_F(SessionTest, AuthLineLimit) {
  Open();
  Run("EHLO c\r\n");
  // A syntactically bad but long-enough XOAUTH2 initial response: the length is what matters.
  std::string prefix = "AUTH XOAUTH2 ";
  std::string at_limit = prefix + std::string(kAuthLineBytesMax - prefix.size() - 2, 'A') + "\r\n";
  EXPECT_EQ(Run(at_limit, 1000), "501 5.5.124 Invalid XOAUTH2 auth data\r\n");
  std::string over = prefix + std::string(kAuthLineBytesMax - prefix.size() - 1, 'A') + "\r\n";
  EXPECT_EQ(Run(over, 1000), "500 5.5.2 Line too long\r\n");
}

TEST_F(SessionTest, BareLineEndingsAndNulInCommands) {
  Open();
  const std::string bare = "550 5.5.2 Bare line feed or carriage return not allowed\r\n";
  EXPECT_EQ(Run("NOOP\n"), bare);
  EXPECT_EQ(Run("NOOP\rRSET\r\n"), bare);
  EXPECT_EQ(Run("NOOP\r\r\n"), bare);
  EXPECT_EQ(Run(absl::string_view("NO\0OP\r\n", 7)), bare);
  EXPECT_EQ(Run("NOOP\r\n"), "250 2.0.0 OK\r\n");
  EXPECT_EQ(session_->errors(), 4u);
}

TEST_F(SessionTest, ErrorLimitClosesWith421) {
  SessionOptions options = TlsOptions();
  options.errors_per_session = 3;
  Open(options);
  EXPECT_EQ(Run("X1\r\nX2\r\n"),
            "500 5.5.2 Command unrecognized\r\n500 5.5.2 Command unrecognized\r\n");
  EXPECT_FALSE(session_->closed());
  EXPECT_EQ(Run("X3\r\nNOOP\r\n"),
            "500 5.5.2 Command unrecognized\r\n421 4.7.0 Too many errors\r\n");
  EXPECT_TRUE(session_->closed());
}

TEST_F(SessionTest, HttpVerbsCloseTheSession) {
  for (const char* request :
       {"GET / HTTP/1.1\r\n", "POST /x HTTP/1.1\r\n", "CONNECT mx:25 HTTP/1.1\r\n"}) {
    Open();
    EXPECT_EQ(Run(absl::StrCat(request, "Host: x\r\n\r\n")),
              "421 4.7.0 HTTP is not spoken here, closing\r\n");
    EXPECT_TRUE(session_->closed());
  }
}

TEST_F(SessionTest, HandlerAnswer421ClosesTheSession) {
  OpenAuthenticated();
  handler_.mail_replies.push_back(kReplyShuttingDown);
  EXPECT_EQ(Run("MAIL FROM:<a@example.test>\r\nNOOP\r\n"), "421 4.3.2 Service shutting down\r\n");
  EXPECT_TRUE(session_->closed());
}

// --- PIPELINING -------------------------------------------------------------------------------

constexpr absl::string_view kPipeline =
    "MAIL FROM:<app@example.test>\r\nRCPT TO:<a@example.test>\r\nRCPT TO:<b@example.test>\r\n"
    "DATA\r\nline one\r\n..dot\r\n.\r\nMAIL FROM:<app@example.test>\r\n"
    "RCPT TO:<c@example.test>\r\nBDAT 5\r\nab\r\ncBDAT 0 LAST\r\nRSET\r\nNOOP\r\nQUIT\r\n";

TEST_F(SessionTest, PipelinedGroupRepliesInOrder) {
  OpenAuthenticated();
  EXPECT_EQ(Run(kPipeline),
            "250 2.1.0 Sender OK\r\n250 2.1.5 Recipient OK\r\n250 2.1.5 Recipient OK\r\n"
            "354 Start mail input; end with <CRLF>.<CRLF>\r\n"
            "250 2.0.0 Message accepted for delivery\r\n"
            "250 2.1.0 Sender OK\r\n250 2.1.5 Recipient OK\r\n250 2.0.0 5 octets received\r\n"
            "250 2.0.0 Message accepted for delivery\r\n250 2.0.0 Reset OK\r\n250 2.0.0 OK\r\n"
            "221 2.0.0 Bye\r\n");
  EXPECT_EQ(handler_.messages, (std::vector<std::string>{"line one\r\n.dot\r\n", "ab\r\nc"}));
}

TEST_F(SessionTest, PipelinedGroupSplitAtEveryBytePositionGivesTheSameTranscript) {
  OpenAuthenticated();
  std::string whole = Run(kPipeline);
  std::vector<std::string> whole_events = handler_.events;
  std::vector<std::string> whole_messages = handler_.messages;
  for (size_t split = 1; split < kPipeline.size(); ++split) {
    for (bool async : {false, true}) {
      handler_ = RecordingHandler();
      handler_.async = async;
      OpenAuthenticated();
      handler_.messages.clear();
      std::string out = Run(kPipeline.substr(0, split));
      out += Run(kPipeline.substr(split));
      ASSERT_EQ(out, whole) << "split at " << split << " async " << async;
      ASSERT_EQ(handler_.events, whole_events) << "split at " << split;
      ASSERT_EQ(handler_.messages, whole_messages) << "split at " << split;
    }
  }
}

TEST_F(SessionTest, OneByteAtATime) {
  OpenAuthenticated();
  std::string whole = Run(kPipeline);
  OpenAuthenticated();
  EXPECT_EQ(Run(kPipeline, 1), whole);
}

TEST_F(SessionTest, AsyncAnswerHoldsThePipelinedRest) {
  OpenAuthenticated();
  handler_.async = true;
  std::string input = "MAIL FROM:<a@example.test>\r\nRCPT TO:<b@example.test>\r\nNOOP\r\n";
  size_t consumed = session_->Feed(input, TestTime());
  EXPECT_EQ(consumed, absl::string_view("MAIL FROM:<a@example.test>\r\n").size());
  EXPECT_EQ(session_->blocked(), Session::Blocked::kAwaitingAnswer);
  EXPECT_EQ(session_->Feed(absl::string_view(input).substr(consumed), TestTime()), 0u);
  EXPECT_EQ(Take(), "");
  session_->Answer(kReplySenderOk);
  EXPECT_EQ(session_->blocked(), Session::Blocked::kNo);
  EXPECT_EQ(Take(), "250 2.1.0 Sender OK\r\n");
}

TEST_F(SessionTest, OutputBoundStopsReadingUntilDrained) {
  Open();
  std::string input;
  for (int i = 0; i < 20000; ++i) {
    input += "NOOP\r\n";
  }
  size_t consumed = session_->Feed(input, TestTime());
  EXPECT_LT(consumed, input.size());
  EXPECT_EQ(session_->blocked(), Session::Blocked::kOutputFull);
  EXPECT_LE(session_->output().size(), kOutputBytesMax + 64);
  std::string out = Take();
  out += Run(absl::string_view(input).substr(consumed));
  EXPECT_EQ(out.size(), 20000 * absl::string_view("250 2.0.0 OK\r\n").size());
}

// --- STARTTLS ---------------------------------------------------------------------------------

class StartTlsTest : public SessionTest {
 protected:
  void SetUp() override {
    SessionOptions options = TlsOptions();
    options.tls_active = false;
    Open(options);
  }
};

TEST_F(StartTlsTest, InjectedCommandsAfterStartTlsAreNeverAnswered) {
  Run("EHLO c\r\n");
  // The CVE-2011-0411 probe: everything in the same read after STARTTLS must vanish.
  size_t consumed = session_->Feed("STARTTLS\r\nRSET\r\nMAIL FROM:<x@y.test>\r\n", TestTime());
  EXPECT_EQ(consumed, absl::string_view("STARTTLS\r\nRSET\r\nMAIL FROM:<x@y.test>\r\n").size());
  EXPECT_EQ(Take(), "220 2.0.0 Ready to start TLS\r\n");
  EXPECT_EQ(session_->blocked(), Session::Blocked::kTlsHandshake);
  EXPECT_EQ(session_->Feed("NOOP\r\n", TestTime()), 6u);  // still plaintext: discarded
  EXPECT_EQ(Take(), "");
  session_->TlsStarted(TestTime());
  EXPECT_EQ(Take(), "");  // no greeting after the handshake
  EXPECT_EQ(Run("NOOP\r\n"), "250 2.0.0 OK\r\n");
  EXPECT_EQ(handler_.events, (std::vector<std::string>{"STARTTLS"}));
}

TEST_F(StartTlsTest, SessionStartsOverAfterTls) {
  Run("EHLO c\r\nSTARTTLS\r\n");
  EXPECT_TRUE(session_->tls_active());
  session_->MarkAuthenticated();
  EXPECT_EQ(Run("MAIL FROM:<a@example.test>\r\n"), "503 5.5.1 Send EHLO or HELO first\r\n");
  std::string ehlo = Run("EHLO c\r\n");
  EXPECT_EQ(ehlo.find("STARTTLS"), std::string::npos);
  EXPECT_EQ(Run("STARTTLS\r\n"), "503 5.5.1 TLS already active\r\n");
}

TEST_F(StartTlsTest, StartTlsWithArgumentsIsASyntaxError) {
  Run("EHLO c\r\n");
  EXPECT_EQ(Run("STARTTLS now\r\n"), "501 5.5.4 Syntax error in parameters or arguments\r\n");
}

// --- SMTP smuggling ---------------------------------------------------------------------------

struct SmugglingCase {
  const char* name;
  absl::string_view body;  // sent after DATA, before the real CR LF . CR LF
};

class SmugglingTest : public SessionTest, public ::testing::WithParamInterface<SmugglingCase> {};

TEST_P(SmugglingTest, FakeEndIsContentAndTheMessageIsDropped) {
  OpenAuthenticated();
  std::string input = absl::StrCat(kEnvelope, "Subject: x\r\n\r\nhi", GetParam().body,
                                   "MAIL FROM:<evil@example.test>\r\nRCPT TO:<v@example.test>\r\n"
                                   "DATA\r\nsmuggled\r\n\r\n.\r\nNOOP\r\n");
  for (size_t piece : {size_t{0}, size_t{1}, size_t{3}}) {
    handler_.events.clear();
    EXPECT_EQ(Run(input, piece),
              absl::StrCat(kEnvelopeReplies,
                           "550 5.5.2 Bare line feed or carriage return not allowed\r\n"
                           "250 2.0.0 OK\r\n"))
        << GetParam().name << " piece " << piece;
    EXPECT_EQ(handler_.events,
              (std::vector<std::string>{"MAIL <app@example.test>", "RCPT <bob@example.test>",
                                        "BODY", "ABORT"}));
  }
  EXPECT_TRUE(handler_.messages.empty());
}

INSTANTIATE_TEST_SUITE_P(
    Variants, SmugglingTest,
    ::testing::Values(SmugglingCase{"lf_dot_lf", "\n.\n"}, SmugglingCase{"lf_dot_crlf", "\n.\r\n"},
                      SmugglingCase{"cr_dot_cr", "\r.\r"}, SmugglingCase{"cr_dot_crlf", "\r.\r\n"},
                      SmugglingCase{"crlf_dot_lf", "\r\n.\n"},
                      SmugglingCase{"crlf_dot_cr", "\r\n.\r"},
                      SmugglingCase{"crlf_dot_cr_cr_lf", "\r\n.\r\r\n"},
                      SmugglingCase{"crlf_nul_dot_crlf", absl::string_view("\r\n\0.\r\n", 6)},
                      SmugglingCase{"crlf_dot_nul_crlf", absl::string_view("\r\n.\0\r\n", 6)},
                      SmugglingCase{"lf_lf_dot_lf", "\n\n.\n\n"}),
    [](const ::testing::TestParamInfo<SmugglingCase>& info) { return info.param.name; });

// --- BDAT (RFC 3030) --------------------------------------------------------------------------

TEST_F(SessionTest, BdatChunksAreTakenAsIs) {
  OpenAuthenticated();
  EXPECT_EQ(Run("MAIL FROM:<a@example.test>\r\nRCPT TO:<b@example.test>\r\n"
                "BDAT 7\r\n.\r\nab\r\nBDAT 6 LAST\r\n.\r\n.\r\n"),
            "250 2.1.0 Sender OK\r\n250 2.1.5 Recipient OK\r\n250 2.0.0 7 octets received\r\n"
            "250 2.0.0 Message accepted for delivery\r\n");
  EXPECT_EQ(handler_.messages, (std::vector<std::string>{".\r\nab\r\n.\r\n.\r\n"}));
}

TEST_F(SessionTest, BdatZeroLastIsLegal) {
  OpenAuthenticated();
  EXPECT_EQ(Run("MAIL FROM:<a@example.test>\r\nRCPT TO:<b@example.test>\r\nBDAT 0 LAST\r\n"),
            "250 2.1.0 Sender OK\r\n250 2.1.5 Recipient OK\r\n"
            "250 2.0.0 Message accepted for delivery\r\n");
  EXPECT_EQ(handler_.messages, (std::vector<std::string>{""}));
}

TEST_F(SessionTest, BdatWithoutTransactionConsumesTheChunk) {
  OpenAuthenticated();
  EXPECT_EQ(Run("BDAT 6 LAST\r\nNOOP\r\nNOOP\r\n"),
            "503 5.5.1 Need MAIL command\r\n250 2.0.0 OK\r\n");
  EXPECT_EQ(Run("MAIL FROM:<a@example.test>\r\nBDAT 6\r\nRSET\r\nNOOP\r\n"),
            "250 2.1.0 Sender OK\r\n503 5.5.1 Need RCPT command\r\n250 2.0.0 OK\r\n");
}

TEST_F(SessionTest, DataAfterBdatIsRefused) {
  OpenAuthenticated();
  EXPECT_EQ(Run("MAIL FROM:<a@example.test>\r\nRCPT TO:<b@example.test>\r\nBDAT 3\r\nabcDATA\r\n"
                "BDAT 2 LAST\r\n\r\n"),
            "250 2.1.0 Sender OK\r\n250 2.1.5 Recipient OK\r\n250 2.0.0 3 octets received\r\n"
            "503 5.5.1 DATA not permitted after BDAT\r\n"
            "250 2.0.0 Message accepted for delivery\r\n");
  EXPECT_EQ(handler_.messages, (std::vector<std::string>{"abc\r\n"}));
}

TEST_F(SessionTest, BdatSizeSyntax) {
  OpenAuthenticated();
  const std::string syntax = "501 5.5.4 Syntax error in parameters or arguments\r\n";
  EXPECT_EQ(Run("BDAT\r\n"), syntax);
  EXPECT_EQ(Run("BDAT -1\r\n"), syntax);
  EXPECT_EQ(Run("BDAT 1x\r\n"), syntax);
  EXPECT_EQ(Run("BDAT 1 FIRST\r\n"), syntax);
  EXPECT_EQ(Run("BDAT 99999999999999999999\r\n"), syntax);
  EXPECT_EQ(Run("BDAT +5\r\n"), syntax);
}

TEST_F(SessionTest, FailedBdatChunkDiscardsTheFollowingChunks) {
  SessionOptions options = TlsOptions();
  options.message_size_bytes = 1024;
  OpenAuthenticated(options);
  std::string big(2000, 'x');
  EXPECT_EQ(Run(absl::StrCat("MAIL FROM:<a@example.test>\r\nRCPT TO:<b@example.test>\r\n"
                             "BDAT 2000\r\n",
                             big, "BDAT 4 LAST\r\nabcdNOOP\r\n"),
                100),
            "250 2.1.0 Sender OK\r\n250 2.1.5 Recipient OK\r\n"
            "552 5.3.4 Message size exceeds fixed maximum message size\r\n"
            "503 5.5.1 Need MAIL command\r\n250 2.0.0 OK\r\n");
  EXPECT_TRUE(handler_.messages.empty());
  EXPECT_EQ(handler_.body.size(), 0u);  // a chunk known to be too big is not handed over
}

TEST_F(SessionTest, BdatBareLineFeedFailsTheTransaction) {
  OpenAuthenticated();
  EXPECT_EQ(Run("MAIL FROM:<a@example.test>\r\nRCPT TO:<b@example.test>\r\n"
                "BDAT 5\r\na\nb\r\nBDAT 0 LAST\r\n"),
            "250 2.1.0 Sender OK\r\n250 2.1.5 Recipient OK\r\n"
            "550 5.5.2 Bare line feed or carriage return not allowed\r\n"
            "503 5.5.1 Need MAIL command\r\n");
}

TEST_F(SessionTest, BdatCrLfSplitAcrossChunksIsFine) {
  OpenAuthenticated();
  EXPECT_EQ(Run("MAIL FROM:<a@example.test>\r\nRCPT TO:<b@example.test>\r\n"
                "BDAT 2\r\na\rBDAT 1 LAST\r\n\n"),
            "250 2.1.0 Sender OK\r\n250 2.1.5 Recipient OK\r\n250 2.0.0 2 octets received\r\n"
            "250 2.0.0 Message accepted for delivery\r\n");
  EXPECT_EQ(handler_.messages, (std::vector<std::string>{"a\r\n"}));
}

TEST_F(SessionTest, BdatTrailingLoneCrFails) {
  OpenAuthenticated();
  EXPECT_EQ(Run("MAIL FROM:<a@example.test>\r\nRCPT TO:<b@example.test>\r\nBDAT 2 LAST\r\na\r"),
            "250 2.1.0 Sender OK\r\n250 2.1.5 Recipient OK\r\n"
            "550 5.5.2 Bare line feed or carriage return not allowed\r\n");
}

// --- AUTH -------------------------------------------------------------------------------------

class AuthTest : public SessionTest {
 protected:
  void SetUp() override {
    Open();
    Run("EHLO c\r\n");
  }
};

TEST_F(AuthTest, PlainWithInitialResponse) {
  EXPECT_EQ(Run(absl::StrCat("AUTH PLAIN ", kPlainCredentials, "\r\n")),
            "235 2.7.0 Authentication successful\r\n");
  EXPECT_EQ(handler_.events, (std::vector<std::string>{"AUTH PLAIN |app@example.test|secret"}));
  EXPECT_TRUE(session_->authenticated());
}

TEST_F(AuthTest, PlainWithContinuation) {
  EXPECT_EQ(Run("auth plain\r\n"), "334 \r\n");
  EXPECT_EQ(Run(absl::StrCat(kPlainCredentials, "\r\n")),
            "235 2.7.0 Authentication successful\r\n");
  EXPECT_TRUE(session_->authenticated());
}

TEST_F(AuthTest, PlainWithAuthzid) {
  std::string encoded = absl::Base64Escape(absl::string_view("admin\0user\0pw", 13));
  Run(absl::StrCat("AUTH PLAIN ", encoded, "\r\n"));
  EXPECT_EQ(handler_.events, (std::vector<std::string>{"AUTH PLAIN admin|user|pw"}));
}

TEST_F(AuthTest, LoginWithAndWithoutInitialResponse) {
  EXPECT_EQ(Run("AUTH LOGIN\r\n"), "334 VXNlcm5hbWU6\r\n");
  EXPECT_EQ(Run(absl::StrCat(absl::Base64Escape("app@example.test"), "\r\n")),
            "334 UGFzc3dvcmQ6\r\n");
  handler_.auth_replies.push_back(kReplyAuthFailed);
  EXPECT_EQ(Run(absl::StrCat(absl::Base64Escape("wrong"), "\r\n")),
            "535 5.7.3 Authentication unsuccessful\r\n");
  EXPECT_FALSE(session_->authenticated());
  EXPECT_EQ(Run(absl::StrCat("AUTH LOGIN ", absl::Base64Escape("app@example.test"), "\r\n")),
            "334 UGFzc3dvcmQ6\r\n");
  EXPECT_EQ(Run(absl::StrCat(absl::Base64Escape("secret"), "\r\n")),
            "235 2.7.0 Authentication successful\r\n");
  EXPECT_EQ(handler_.events, (std::vector<std::string>{"AUTH LOGIN |app@example.test|wrong",
                                                       "AUTH LOGIN |app@example.test|secret"}));
}

TEST_F(AuthTest, Xoauth2InitialAndContinuation) {
  std::string xoauth2 = absl::Base64Escape(
      "user=app@example.test\x01"
      "auth=Bearer eyJ.token.sig\x01\x01");
  EXPECT_EQ(Run(absl::StrCat("AUTH XOAUTH2 ", xoauth2, "\r\n")),
            "235 2.7.0 Authentication successful\r\n");
  EXPECT_EQ(handler_.events,
            (std::vector<std::string>{"AUTH XOAUTH2 |app@example.test|eyJ.token.sig"}));
  SetUp();
  EXPECT_EQ(Run("AUTH XOAUTH2\r\n"), "334 \r\n");
  EXPECT_EQ(Run(absl::StrCat(xoauth2, "\r\n")), "235 2.7.0 Authentication successful\r\n");
}

TEST_F(AuthTest, Xoauth2Malformed) {
  const std::string malformed = "501 5.5.124 Invalid XOAUTH2 auth data\r\n";
  EXPECT_EQ(Run("AUTH XOAUTH2 !!!\r\n"), malformed);
  EXPECT_EQ(Run(absl::StrCat("AUTH XOAUTH2 ", absl::Base64Escape("user=a\x01\x01"), "\r\n")),
            malformed);
  EXPECT_EQ(Run(absl::StrCat("AUTH XOAUTH2 ",
                             absl::Base64Escape("user=a\x01"
                                                "auth=Basic x\x01\x01"),
                             "\r\n")),
            malformed);
  EXPECT_EQ(Run(absl::StrCat("AUTH XOAUTH2 ",
                             absl::Base64Escape("user=a\x01"
                                                "auth=Bearer t\x01"),
                             "\r\n")),
            malformed);
  EXPECT_TRUE(handler_.events.empty());
}

TEST_F(AuthTest, CancelUnknownAndBadData) {
  EXPECT_EQ(Run("AUTH PLAIN\r\n*\r\n"), "334 \r\n501 5.7.0 Authentication cancelled\r\n");
  EXPECT_EQ(Run("AUTH LOGIN\r\n*\r\n"),
            "334 VXNlcm5hbWU6\r\n501 5.7.0 Authentication cancelled\r\n");
  EXPECT_EQ(Run("AUTH CRAM-MD5\r\n"), "504 5.7.4 Unrecognized authentication type\r\n");
  EXPECT_EQ(Run("AUTH\r\n"), "501 5.5.4 Syntax error in parameters or arguments\r\n");
  EXPECT_EQ(Run("AUTH PLAIN not-base64!\r\n"),
            "501 5.5.2 Invalid base64 or malformed SASL data\r\n");
  EXPECT_EQ(Run(absl::StrCat("AUTH PLAIN ", absl::Base64Escape("no-nul-here"), "\r\n")),
            "501 5.5.2 Invalid base64 or malformed SASL data\r\n");
  EXPECT_EQ(Run(absl::StrCat("AUTH PLAIN ",
                             absl::Base64Escape(absl::string_view("\0us\ner\0pw", 9)), "\r\n")),
            "501 5.5.2 Control character in parameter\r\n");
  EXPECT_TRUE(handler_.events.empty());
}

TEST_F(AuthTest, FailuresUpToTheLimitThenClose) {
  handler_.auth_replies = {kReplyAuthFailed, kReplyAuthFailed, kReplyAuthFailed};
  std::string attempt = absl::StrCat("AUTH PLAIN ", kPlainCredentials, "\r\n");
  EXPECT_EQ(Run(attempt), "535 5.7.3 Authentication unsuccessful\r\n");
  EXPECT_EQ(Run(attempt), "535 5.7.3 Authentication unsuccessful\r\n");
  EXPECT_EQ(Run(attempt), "535 5.7.3 Authentication unsuccessful\r\n421 4.7.0 Too many errors\r\n");
  EXPECT_TRUE(session_->closed());
}

TEST_F(AuthTest, TenantCapLeavesTheSessionUnauthenticatedAndOpen) {
  handler_.auth_replies = {kReplyTenantCap, kReplyTenantCap, kReplyTenantCap, kReplyTenantCap};
  std::string attempt = absl::StrCat("AUTH PLAIN ", kPlainCredentials, "\r\n");
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(Run(attempt),
              "454 4.7.0 Too many authenticated connections for this tenant, try again later\r\n");
  }
  EXPECT_FALSE(session_->closed());
  EXPECT_FALSE(session_->authenticated());
  EXPECT_EQ(Run(attempt), "235 2.7.0 Authentication successful\r\n");
}

TEST_F(AuthTest, AuthDuringTransactionIsRefused) {
  EXPECT_EQ(Run(absl::StrCat("AUTH PLAIN ", kPlainCredentials, "\r\n")),
            "235 2.7.0 Authentication successful\r\n");
  EXPECT_EQ(Run("AUTH LOGIN\r\n"), "503 5.5.1 Already authenticated\r\n");
}

TEST_F(AuthTest, AsynchronousVerification) {
  handler_.async = true;
  std::string attempt = absl::StrCat("AUTH PLAIN ", kPlainCredentials, "\r\nNOOP\r\n");
  size_t consumed = session_->Feed(attempt, TestTime());
  EXPECT_EQ(session_->blocked(), Session::Blocked::kAwaitingAnswer);
  EXPECT_EQ(Take(), "");
  session_->Answer(kReplyAuthOk);
  EXPECT_EQ(session_->Feed(absl::string_view(attempt).substr(consumed), TestTime()), 6u);
  EXPECT_EQ(Take(), "235 2.7.0 Authentication successful\r\n250 2.0.0 OK\r\n");
}

// --- Time and shutdown ------------------------------------------------------------------------

TEST_F(SessionTest, CommandTimeout) {
  SessionOptions options = TlsOptions();
  options.command_timeout = absl::Seconds(30);
  Open(options);
  EXPECT_EQ(session_->Deadline(), TestTime() + absl::Seconds(30));
  session_->OnDeadline(TestTime() + absl::Seconds(29));
  EXPECT_EQ(Take(), "");
  session_->OnDeadline(TestTime() + absl::Seconds(30));
  EXPECT_EQ(Take(), "421 4.4.2 Timeout exceeded\r\n");
  EXPECT_TRUE(session_->closed());
}

TEST_F(SessionTest, DataTimeoutAppliesInsideTheBody) {
  SessionOptions options = TlsOptions();
  options.command_timeout = absl::Seconds(30);
  options.data_timeout = absl::Seconds(90);
  OpenAuthenticated(options);
  session_->Feed(absl::StrCat(kEnvelope, "partial"), TestTime() + absl::Seconds(5));
  EXPECT_EQ(session_->Deadline(), TestTime() + absl::Seconds(95));
}

TEST_F(SessionTest, SessionTimeoutCapsEverything) {
  SessionOptions options = TlsOptions();
  options.session_timeout = absl::Seconds(60);
  Open(options);
  session_->Feed("NOOP\r\n", TestTime() + absl::Seconds(50));
  EXPECT_EQ(session_->Deadline(), TestTime() + absl::Seconds(60));
}

TEST_F(SessionTest, FirstCommandHasItsOwnShorterDeadline) {
  SessionOptions options = TlsOptions();
  options.first_command_timeout = absl::Seconds(30);
  options.command_timeout = absl::Seconds(300);
  Open(options);
  EXPECT_EQ(session_->Deadline(), TestTime() + absl::Seconds(30));
  session_->Feed("NOOP\r\n", TestTime() + absl::Seconds(10));
  EXPECT_EQ(session_->Deadline(), TestTime() + absl::Seconds(310));
}

TEST_F(SessionTest, SlowDripInsideACommandLineDoesNotPushTheDeadlineBack) {
  SessionOptions options = TlsOptions();
  options.command_timeout = absl::Seconds(300);
  Open(options);
  session_->Feed("NOOP\r\n", TestTime() + absl::Seconds(1));
  Take();
  // One byte every 100 s: each arrives before the deadline, but the line never ends.
  for (int i = 1; i <= 2; ++i) {
    session_->Feed("N", TestTime() + absl::Seconds(1 + 100 * i));
    session_->OnDeadline(TestTime() + absl::Seconds(1 + 100 * i));
  }
  session_->Feed("O", TestTime() + absl::Seconds(300));
  session_->OnDeadline(TestTime() + absl::Seconds(300));
  EXPECT_FALSE(session_->closed());
  EXPECT_EQ(session_->Deadline(), TestTime() + absl::Seconds(301));
  session_->OnDeadline(TestTime() + absl::Seconds(301));
  EXPECT_EQ(Take(), "421 4.4.2 Timeout exceeded\r\n");
  EXPECT_TRUE(session_->closed());
}

TEST_F(SessionTest, DataBelowTheMinimumRateTimesOut) {
  SessionOptions options = TlsOptions();
  options.data_rate_min_bytes_per_s = 500;
  OpenAuthenticated(options);
  Run(kEnvelope);
  Take();
  absl::Time t = TestTime();
  session_->Feed(std::string(1000, 'x') + "\r\n", t + absl::Seconds(1));
  session_->OnDeadline(t + absl::Seconds(20));
  EXPECT_FALSE(session_->closed());  // the window is not over yet
  session_->OnDeadline(t + kDataRateWindow + absl::Seconds(1));
  EXPECT_EQ(Take(), "421 4.4.2 Timeout exceeded\r\n");  // 1,002 bytes in 30 s < 15,000
  EXPECT_TRUE(session_->closed());
}

TEST_F(SessionTest, DataAboveTheMinimumRateGoesOn) {
  SessionOptions options = TlsOptions();
  options.data_rate_min_bytes_per_s = 500;
  OpenAuthenticated(options);
  Run(kEnvelope);
  Take();
  absl::Time t = TestTime();
  for (int second = 1; second <= 90; ++second) {
    session_->Feed(std::string(998, 'x') + "\r\n", t + absl::Seconds(second));
    session_->OnDeadline(t + absl::Seconds(second));
  }
  EXPECT_FALSE(session_->closed());
}

TEST_F(SessionTest, ShutdownClosesIdleSessions) {
  Open();
  Take();
  session_->Shutdown();
  EXPECT_EQ(Take(), "421 4.3.2 Service shutting down\r\n");
  EXPECT_TRUE(session_->closed());
}

TEST_F(SessionTest, ShutdownLetsTheMessageInProgressFinish) {
  OpenAuthenticated();
  Run(absl::StrCat(kEnvelope, "first half\r\n"));
  session_->Shutdown();
  EXPECT_FALSE(session_->closed());
  EXPECT_EQ(Run("second half\r\n.\r\nNOOP\r\n"),
            absl::StrCat(kAccepted, "421 4.3.2 Service shutting down\r\n"));
  EXPECT_EQ(handler_.messages, (std::vector<std::string>{"first half\r\nsecond half\r\n"}));
  EXPECT_TRUE(session_->closed());
}

TEST_F(SessionTest, PeerGoneInsideABodyClosesAtOnceAndDropsTheMessage) {
  OpenAuthenticated();
  Run(absl::StrCat(kEnvelope, "first half\r\n"));
  session_->PeerGone();  // the body can never end: no waiting for data_timeout
  EXPECT_TRUE(session_->closed());
  EXPECT_TRUE(handler_.messages.empty());
}

TEST_F(SessionTest, PeerGoneWhileIdleEndsLikeShutdown) {
  Open();
  Take();
  session_->PeerGone();
  EXPECT_TRUE(session_->closed());
}

// --- The zero-copy body path ------------------------------------------------------------------

TEST_F(SessionTest, BodySlicesPointIntoTheInput) {
  OpenAuthenticated();
  Run("MAIL FROM:<a@example.test>\r\nRCPT TO:<b@example.test>\r\nDATA\r\n");
  std::string body;
  for (int i = 0; i < 100; ++i) {
    body += "A line of ordinary message text, long enough to be typical of mail.\r\n";
  }
  body += "..stuffed\r\nend\r\n.\r\n";
  handler_.slice_views.clear();
  size_t consumed = session_->Feed(body, TestTime());
  EXPECT_EQ(consumed, body.size());
  EXPECT_EQ(handler_.slice_views.size(), 2u);  // one piece, one stuffed dot
  for (absl::string_view slice : handler_.slice_views) {
    EXPECT_GE(slice.data(), body.data());
    EXPECT_LE(slice.data() + slice.size(), body.data() + body.size());
  }
}

}  // namespace
}  // namespace chute::smtp
