// parser_test.cc: unit tests for the MAIL/RCPT/BDAT argument and SASL parsers.

#include "smtp/parser.h"

#include <gtest/gtest.h>

#include "absl/strings/escaping.h"
#include "smtp/address.h"

namespace chute::smtp {
namespace {

TEST(ParseMailArgsTest, AddressesAndParameters) {
  MailArgs m;
  EXPECT_EQ(ParseMailArgs("FROM:<a@b.test>", &m), std::nullopt);
  EXPECT_EQ(m.address, "a@b.test");
  m = MailArgs();
  EXPECT_EQ(ParseMailArgs("from: <a@b.test> size=42 body=7bit", &m), std::nullopt);
  EXPECT_EQ(*m.size, 42u);
  EXPECT_EQ(m.body, BodyType::k7Bit);
  m = MailArgs();
  EXPECT_EQ(ParseMailArgs("FROM:<@relay.test,@r2.test:a@b.test>", &m), std::nullopt);
  EXPECT_EQ(m.address, "a@b.test");  // the source route is dropped
  m = MailArgs();
  EXPECT_EQ(ParseMailArgs("FROM:<\"a > b\"@b.test>", &m), std::nullopt);
  EXPECT_EQ(m.address, "\"a > b\"@b.test");
  m = MailArgs();
  EXPECT_EQ(ParseMailArgs("FROM:<a@[192.0.2.1]>", &m), std::nullopt);
  m = MailArgs();
  EXPECT_EQ(ParseMailArgs("FROM:<>", &m), std::nullopt);
  EXPECT_EQ(m.address, "");
}

TEST(ParseMailArgsTest, Rejections) {
  struct Case {
    const char* args;
    Reply reply;
  } cases[] = {
      {"TO:<a@b.test>", kReplySyntax},
      {"FROM:a@b.test", kReplyBadSenderSyntax},
      {"FROM:<a@b.test", kReplyBadSenderSyntax},
      {"FROM:<a@b.test>x", kReplyBadSenderSyntax},
      {"FROM:<a.@b.test>", kReplyBadSenderSyntax},
      {"FROM:<a..b@b.test>", kReplyBadSenderSyntax},
      {"FROM:<a@-b.test>", kReplyBadSenderSyntax},
      {"FROM:<a@b..test>", kReplyBadSenderSyntax},
      {"FROM:<a b@b.test>", kReplyBadSenderSyntax},
      {"FROM:<postmaster>", kReplyBadSenderSyntax},
      {"FROM:<a@b.test> SIZE=1 SIZE=2", kReplySyntax},
      {"FROM:<a@b.test> SIZE=", kReplySyntax},
      {"FROM:<a@b.test> SIZE=-1", kReplySyntax},
      {"FROM:<a@b.test> BODY=8BITMIME BODY=7BIT", kReplySyntax},
      {"FROM:<a@b.test> SMTPUTF8=yes", kReplySyntax},
      {"FROM:<a@b.test> RET=FULL RET=HDRS", kReplySyntax},
      {"FROM:<a@b.test> RET=BODY", kReplySyntax},
      {"FROM:<a@b.test> ENVID=", kReplySyntax},
      {"FROM:<a@b.test> ENVID=a ENVID=b", kReplySyntax},
      {"FROM:<a@b.test> ENVID=a+0D", kReplySyntax},
      {"FROM:<a@b.test> MT-PRIORITY=3", kReplyParameterUnsupported},
      {"FROM:<a@b.test> =x", kReplySyntax},
      {"FROM:<a@b.test> AUTH=x+0D", kReplyControlInParameter},
      {"FROM:<a@b.test> AUTH=x+0", kReplyControlInParameter},
  };
  for (const Case& c : cases) {
    MailArgs m;
    std::optional<Reply> reply = ParseMailArgs(c.args, &m);
    ASSERT_TRUE(reply.has_value()) << c.args;
    EXPECT_EQ(reply->text, c.reply.text) << c.args;
  }
}

TEST(ParseMailArgsTest, LengthLimits) {
  MailArgs m;
  std::string local64(64, 'l');
  EXPECT_EQ(ParseMailArgs("FROM:<" + local64 + "@b.test>", &m), std::nullopt);
  EXPECT_NE(ParseMailArgs("FROM:<" + local64 + "l@b.test>", &m), std::nullopt);
  std::string label63(63, 'd');
  EXPECT_EQ(ParseMailArgs("FROM:<a@" + label63 + ".test>", &m), std::nullopt);
  EXPECT_NE(ParseMailArgs("FROM:<a@" + label63 + "d.test>", &m), std::nullopt);
}

TEST(ParseMailArgsTest, SizeSaturatesInsteadOfOverflowing) {
  MailArgs m;
  EXPECT_EQ(ParseMailArgs("FROM:<a@b.test> SIZE=18446744073709551616", &m), std::nullopt);
  EXPECT_EQ(*m.size, UINT64_MAX);
  m = MailArgs();
  EXPECT_EQ(ParseMailArgs("FROM:<a@b.test> SIZE=9999999999999999999", &m), std::nullopt);
  EXPECT_EQ(*m.size, 9999999999999999999u);
}

TEST(ParseRcptArgsTest, PostmasterAndParameters) {
  RcptArgs r;
  EXPECT_EQ(ParseRcptArgs("TO:<Postmaster>", false, &r), std::nullopt);
  EXPECT_EQ(r.address, "Postmaster");
  EXPECT_EQ(ParseRcptArgs("TO:<>", false, &r)->text, kReplyBadRecipientSyntax.text);
  EXPECT_EQ(ParseRcptArgs("TO:<a@b.test> XFORWARD=1", false, &r)->text,
            kReplyParameterUnsupported.text);
  EXPECT_EQ(ParseRcptArgs("TO:<\xC3\xA9@b.test>", false, &r)->text, kReplyNonAsciiAddress.text);
  EXPECT_EQ(ParseRcptArgs("TO:<\xC3\xA9@b.test>", true, &r), std::nullopt);
}

TEST(ParseMailArgsTest, DsnRetAndEnvid) {
  MailArgs m;
  EXPECT_EQ(ParseMailArgs("FROM:<a@b.test> RET=hdrs ENVID=QQ314159+2Bx", &m), std::nullopt);
  EXPECT_EQ(m.ret, DsnRet::kHeaders);
  EXPECT_EQ(m.envid, "QQ314159+2Bx");
  MailArgs full;
  EXPECT_EQ(ParseMailArgs("FROM:<> RET=FULL", &full), std::nullopt);
  EXPECT_EQ(full.ret, DsnRet::kFull);
  MailArgs none;
  EXPECT_EQ(ParseMailArgs("FROM:<a@b.test>", &none), std::nullopt);
  EXPECT_EQ(none.ret, DsnRet::kUnspecified);
  EXPECT_EQ(none.envid, "");
  EXPECT_NE(ParseMailArgs("FROM:<a@b.test> ENVID=" + std::string(101, 'x'), &m), std::nullopt);
  EXPECT_EQ(ParseMailArgs("FROM:<a@b.test> ENVID=" + std::string(100, 'x'), &m), std::nullopt);
  // xtext is printable ASCII: 8-bit bytes go as +XX, or the value is refused.
  EXPECT_EQ(ParseMailArgs("FROM:<a@b.test> ENVID=caf\xC3\xA9", &m)->text, kReplySyntax.text);
  EXPECT_EQ(ParseMailArgs("FROM:<a@b.test> ENVID=caf+C3+A9", &m), std::nullopt);
}

TEST(ParseRcptArgsTest, DsnNotifyAndOrcpt) {
  RcptArgs r;
  EXPECT_EQ(ParseRcptArgs("TO:<a@b.test> NOTIFY=failure,DELAY ORCPT=rfc822;A+40b.test", false, &r),
            std::nullopt);
  EXPECT_EQ(r.notify, kNotifyFailure | kNotifyDelay);
  EXPECT_EQ(r.orcpt, "rfc822;A+40b.test");
  RcptArgs never;
  EXPECT_EQ(ParseRcptArgs("TO:<a@b.test> NOTIFY=NEVER", false, &never), std::nullopt);
  EXPECT_EQ(never.notify, kNotifyNever);
  for (const char* bad :
       {"TO:<a@b.test> NOTIFY=NEVER,FAILURE", "TO:<a@b.test> NOTIFY=", "TO:<a@b.test> NOTIFY=SOON",
        "TO:<a@b.test> NOTIFY=FAILURE NOTIFY=DELAY", "TO:<a@b.test> NOTIFY=FAILURE,",
        "TO:<a@b.test> ORCPT=rfc822", "TO:<a@b.test> ORCPT=;a@b", "TO:<a@b.test> ORCPT=rfc822;",
        "TO:<a@b.test> ORCPT=rfc822;a+0Db", "TO:<a@b.test> ORCPT=x;a ORCPT=x;b"}) {
    RcptArgs b;
    std::optional<Reply> reply = ParseRcptArgs(bad, false, &b);
    ASSERT_TRUE(reply.has_value()) << bad;
    EXPECT_EQ(reply->text, kReplySyntax.text) << bad;
  }
  RcptArgs plain;
  EXPECT_EQ(ParseRcptArgs("TO:<a@b.test>", false, &plain), std::nullopt);
  EXPECT_EQ(plain.notify, 0);
  EXPECT_EQ(plain.orcpt, "");
}

TEST(ParseBdatArgsTest, DigitsOnlyNoOverflow) {
  BdatArgs b;
  EXPECT_EQ(ParseBdatArgs("0 LAST", &b), std::nullopt);
  EXPECT_EQ(b.size_bytes, 0u);
  EXPECT_TRUE(b.last);
  EXPECT_EQ(ParseBdatArgs("1234567890123456789", &b), std::nullopt);
  EXPECT_EQ(b.size_bytes, 1234567890123456789u);
  EXPECT_FALSE(b.last);
  for (const char* bad :
       {"", " 1", "1 ", "1  LAST", "12345678901234567890", "0x10", "1 last x", "-0", "1e3"}) {
    EXPECT_NE(ParseBdatArgs(bad, &b), std::nullopt) << bad;
  }
  EXPECT_EQ(ParseBdatArgs("7 last", &b), std::nullopt);
}

TEST(SplitAddressTest, LastAtSplits) {
  AddressParts parts = SplitAddress("\"a@b\"@Example.Test");
  EXPECT_EQ(parts.local, "\"a@b\"");
  EXPECT_EQ(parts.domain, "Example.Test");
  EXPECT_EQ(SplitAddress("postmaster").domain, "");
}

TEST(SaslTest, Base64) {
  std::string out;
  EXPECT_TRUE(DecodeBase64("=", &out));
  EXPECT_EQ(out, "");
  EXPECT_TRUE(DecodeBase64("YWJj", &out));
  EXPECT_EQ(out, "abc");
  EXPECT_FALSE(DecodeBase64("YWJ", &out));
  EXPECT_FALSE(DecodeBase64("YW Jj", &out));
  EXPECT_FALSE(DecodeBase64("", &out));
  EXPECT_FALSE(DecodeBase64("YW*j", &out));
}

TEST(SaslTest, Plain) {
  SaslPlain p;
  EXPECT_TRUE(ParsePlain(absl::string_view("\0u\0p", 4), &p));
  EXPECT_EQ(p.authcid, "u");
  EXPECT_EQ(p.password, "p");
  EXPECT_FALSE(ParsePlain(absl::string_view("\0\0p", 3), &p));
  EXPECT_FALSE(ParsePlain(absl::string_view("\0u\0", 3), &p));
  EXPECT_FALSE(ParsePlain(absl::string_view("u\0p", 3), &p));
  EXPECT_FALSE(ParsePlain(absl::string_view("\0u\0p\0", 5), &p));
}

TEST(SaslTest, Xoauth2) {
  SaslXoauth2 x;
  EXPECT_TRUE(
      ParseXoauth2("user=a@b\x01"
                   "auth=Bearer t.o.k\x01\x01",
                   &x));
  EXPECT_EQ(x.user, "a@b");
  EXPECT_EQ(x.token, "t.o.k");
  EXPECT_TRUE(ParseXoauth2("auth=bearer t\x01user=a\x01\x01", &x));
  EXPECT_FALSE(
      ParseXoauth2("user=a\x01"
                   "auth=Bearer t\x01",
                   &x));
  EXPECT_FALSE(
      ParseXoauth2("user=a\x01"
                   "auth=Bearer \x01\x01",
                   &x));
  EXPECT_FALSE(
      ParseXoauth2("user=\x01"
                   "auth=Bearer t\x01\x01",
                   &x));
  EXPECT_FALSE(
      ParseXoauth2("user=a\x01user=b\x01"
                   "auth=Bearer t\x01\x01",
                   &x));
  EXPECT_FALSE(
      ParseXoauth2("user=a\x01"
                   "auth=Bearer t\x01"
                   "extra=1\x01\x01",
                   &x));
  EXPECT_FALSE(ParseXoauth2("\x01\x01", &x));
}

TEST(SaslTest, Mechanisms) {
  EXPECT_EQ(ParseMechanism("plain"), Mechanism::kPlain);
  EXPECT_EQ(ParseMechanism("LOGIN"), Mechanism::kLogin);
  EXPECT_EQ(ParseMechanism("xoauth2"), Mechanism::kXoauth2);
  EXPECT_EQ(ParseMechanism("CRAM-MD5"), std::nullopt);
}

}  // namespace
}  // namespace chute::smtp
