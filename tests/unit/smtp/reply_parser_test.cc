// Tests of the reply parser, EHLO capabilities and the data encodings shared by chute's SMTP
// clients (smtp/reply_parser.h, smtp/client_session.h).

#include "smtp/reply_parser.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "smtp/client_session.h"

namespace chute::smtp {
namespace {

// ---------------------------------------------------------------------------------------------
// Reply parser.

std::vector<ServerReply> ParseAll(ReplyParser* parser) {
  std::vector<ServerReply> replies;
  ServerReply reply;
  while (parser->Next(&reply)) {
    replies.push_back(reply);
  }
  return replies;
}

std::vector<std::string> Strings(const std::vector<ServerReply>& replies) {
  std::vector<std::string> out;
  for (const ServerReply& reply : replies) {
    out.push_back(reply.ToString());
  }
  return out;
}

TEST(ReplyParserTest, EveryReplySplitAtEveryByteBoundary) {
  const std::string stream =
      "220 mx.test ESMTP ready\r\n"
      "250-mx.test\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250 CHUNKING\r\n"
      "550-5.1.1 <bob@x.test>: user unknown\r\n550 5.1.1 see the directory\r\n"
      "250\r\n"
      "354 go ahead\n"  // a bare LF is tolerated
      "452 4.2.2 mailbox full\r\n";
  const std::vector<std::string> expected = {
      "220 mx.test ESMTP ready",
      "250 mx.test PIPELINING SIZE 1000 CHUNKING",
      "550 5.1.1 <bob@x.test>: user unknown see the directory",
      "250",
      "354 go ahead",
      "452 4.2.2 mailbox full",
  };
  for (size_t cut = 0; cut <= stream.size(); ++cut) {
    for (size_t second_cut = cut; second_cut <= stream.size(); second_cut += 7) {
      ReplyParser parser;
      std::vector<ServerReply> replies;
      for (auto [begin, end] :
           {std::pair<size_t, size_t>{0, cut}, {cut, second_cut}, {second_cut, stream.size()}}) {
        parser.Feed(absl::string_view(stream).substr(begin, end - begin));
        std::vector<ServerReply> some = ParseAll(&parser);
        replies.insert(replies.end(), some.begin(), some.end());
      }
      ASSERT_FALSE(parser.failed()) << parser.error();
      EXPECT_EQ(Strings(replies), expected) << cut << " " << second_cut;
      EXPECT_TRUE(parser.idle());
    }
  }
  ReplyParser bytewise;
  for (char c : stream) {
    bytewise.Feed(absl::string_view(&c, 1));
  }
  EXPECT_EQ(Strings(ParseAll(&bytewise)), expected);
}

TEST(ReplyParserTest, MultiLineReplyKeepsLinesAndSplitsTheEnhancedCode) {
  ReplyParser parser;
  parser.Feed("550-5.1.1 first\r\n550-5.1.1\r\n550 5.1.1 last\r\n");
  ServerReply reply;
  ASSERT_TRUE(parser.Next(&reply));
  EXPECT_EQ(reply.code, 550);
  EXPECT_EQ(reply.enhanced_code, "5.1.1");
  EXPECT_EQ(reply.lines, (std::vector<std::string>{"first", "", "last"}));
  EXPECT_EQ(reply.Text(), "first last");
  EXPECT_EQ(reply.Class(), 5);
  EXPECT_FALSE(parser.Next(&reply));
}

TEST(ReplyParserTest, EnhancedCodeOnlyWhenWellFormedAndOfTheSameClass) {
  struct Case {
    const char* line;
    const char* enhanced_code;
    const char* text;
  };
  for (const Case& c : std::vector<Case>{{"550 5.1.1 unknown", "5.1.1", "unknown"},
                                         {"550 4.1.1 wrong class", "", "4.1.1 wrong class"},
                                         {"250 2.0.0", "2.0.0", ""},
                                         {"250 2.0.0x no", "", "2.0.0x no"},
                                         {"250 2.1000.0 long", "", "2.1000.0 long"},
                                         {"354 3.0.0 no such class", "", "3.0.0 no such class"},
                                         {"421 4.3.2 bye", "4.3.2", "bye"},
                                         {"250 2.0", "", "2.0"}}) {
    ReplyParser parser;
    parser.Feed(absl::StrCat(c.line, "\r\n"));
    ServerReply reply;
    ASSERT_TRUE(parser.Next(&reply)) << c.line;
    EXPECT_EQ(reply.enhanced_code, c.enhanced_code) << c.line;
    EXPECT_EQ(reply.Text(), c.text) << c.line;
  }
}

TEST(ReplyParserTest, MalformedLinesAreProtocolErrors) {
  for (const char* input : {"25x ok\r\n", "2\r\n", "\r\n", "250_ok\r\n", "650 six\r\n",
                            "050 zero\r\n", "hello\r\n", "250-a\r\n251 b\r\n"}) {
    ReplyParser parser;
    parser.Feed(input);
    EXPECT_TRUE(parser.failed()) << input;
    EXPECT_FALSE(parser.has_reply()) << input;
    parser.Feed("250 ok\r\n");  // ignored after an error
    EXPECT_FALSE(parser.has_reply()) << input;
  }
}

TEST(ReplyParserTest, RepliesBeforeAnErrorAreKept) {
  ReplyParser parser;
  parser.Feed("250 ok\r\nbad\r\n");
  EXPECT_TRUE(parser.failed());
  ServerReply reply;
  ASSERT_TRUE(parser.Next(&reply));
  EXPECT_EQ(reply.code, 250);
}

TEST(ReplyParserTest, LineLengthIsBounded) {
  // A line of exactly the maximum (its CRLF included) is fine...
  std::string longest = "250 " + std::string(kReplyLineBytesMax - 6, 'x') + "\r\n";
  ASSERT_EQ(longest.size(), kReplyLineBytesMax);
  ReplyParser ok;
  ok.Feed(longest);
  EXPECT_FALSE(ok.failed());
  EXPECT_TRUE(ok.has_reply());
  // ...one byte more is not, and the error comes before the line ends.
  ReplyParser too_long;
  too_long.Feed("250 " + std::string(kReplyLineBytesMax - 5, 'x') + "\r");
  EXPECT_TRUE(too_long.failed());
  ReplyParser endless;
  for (int i = 0; i < 100 && !endless.failed(); ++i) {
    endless.Feed(std::string(1000, 'y'));
  }
  EXPECT_TRUE(endless.failed());
}

TEST(ReplyParserTest, LinesPerReplyAreBounded) {
  std::string reply;
  for (size_t i = 0; i < kReplyLinesMax - 1; ++i) {
    reply += "250-x\r\n";
  }
  ReplyParser ok;
  ok.Feed(reply + "250 x\r\n");
  EXPECT_FALSE(ok.failed());
  ReplyParser too_many;
  too_many.Feed(reply + "250-x\r\n250 x\r\n");
  EXPECT_TRUE(too_many.failed());
  EXPECT_FALSE(too_many.has_reply());
}

TEST(ReplyParserTest, QueuedRepliesAreBounded) {
  std::string many;
  for (size_t i = 0; i <= kRepliesQueuedMax; ++i) {
    many += "250\n";
  }
  ReplyParser parser;
  parser.Feed(many);
  EXPECT_TRUE(parser.failed());
  EXPECT_EQ(ParseAll(&parser).size(), kRepliesQueuedMax);
}

TEST(ReplyParserTest, ControlBytesAreReplaced) {
  ReplyParser parser;
  parser.Feed(std::string("550 5.7.1 a\0b\rc\x7f\td\r\n", 20));
  ServerReply reply;
  ASSERT_TRUE(parser.Next(&reply));
  EXPECT_EQ(reply.ToString(), "550 5.7.1 a?b?c?\td");
}

TEST(ReplyParserTest, ToStringIsCut) {
  ReplyParser parser;
  parser.Feed("550 5.1.1 " + std::string(2000, 'z') + "\r\n");
  ServerReply reply;
  ASSERT_TRUE(parser.Next(&reply));
  EXPECT_EQ(reply.ToString(100).size(), 100u);
}

TEST(CapabilitiesTest, ReadsKeywordsCaseInsensitively) {
  ReplyParser parser;
  parser.Feed(
      "250-mx.test greets you\r\n250-pipelining\r\n250-Chunking\r\n250-STARTTLS\r\n"
      "250-8BITMIME\r\n250-SMTPUTF8\r\n250-ENHANCEDSTATUSCODES\r\n250-X-UNKNOWN 1\r\n"
      "250 SIZE 10240000\r\n");
  ServerReply reply;
  ASSERT_TRUE(parser.Next(&reply));
  Capabilities caps = ParseCapabilities(reply);
  EXPECT_TRUE(caps.pipelining);
  EXPECT_TRUE(caps.chunking);
  EXPECT_TRUE(caps.starttls);
  EXPECT_TRUE(caps.eight_bit_mime);
  EXPECT_TRUE(caps.smtputf8);
  EXPECT_TRUE(caps.enhanced_status_codes);
  EXPECT_TRUE(caps.size);
  EXPECT_EQ(caps.size_bytes_max, 10240000u);
}

TEST(CapabilitiesTest, TheFirstLineIsTheServersNameAndSizeMayBeAbsentOrOdd) {
  for (auto [input, size, size_max] : std::vector<std::tuple<std::string, bool, uint64_t>>{
           {"250 PIPELINING\r\n", false, 0},
           {"250-x\r\n250 SIZE\r\n", true, 0},
           {"250-x\r\n250 SIZE 0\r\n", true, 0},
           {"250-x\r\n250 SIZE lots\r\n", true, 0},
           {"250-x\r\n250 SIZE 99999999999999999999999\r\n", true, UINT64_MAX}}) {
    ReplyParser parser;
    parser.Feed(input);
    ServerReply reply;
    ASSERT_TRUE(parser.Next(&reply)) << input;
    Capabilities caps = ParseCapabilities(reply);
    EXPECT_FALSE(caps.pipelining) << input;
    EXPECT_EQ(caps.size, size) << input;
    EXPECT_EQ(caps.size_bytes_max, size_max) << input;
  }
}

TEST(DotStuffingTest, StuffsLeadingDotsAndEndsWithCrlfDot) {
  auto stuffed = [](absl::string_view content) {
    std::string out;
    AppendDotStuffed(content, &out);
    return out;
  };
  EXPECT_EQ(stuffed(""), ".\r\n");
  EXPECT_EQ(stuffed("a\r\n"), "a\r\n.\r\n");
  EXPECT_EQ(stuffed("a"), "a\r\n.\r\n");
  EXPECT_EQ(stuffed(".\r\n"), "..\r\n.\r\n");
  EXPECT_EQ(stuffed("a\r\n.\r\n..x\r\n.y"), "a\r\n..\r\n...x\r\n..y\r\n.\r\n");
  EXPECT_EQ(stuffed("a.b\r\n x.\r\n"), "a.b\r\n x.\r\n.\r\n");
}

}  // namespace
}  // namespace chute::smtp
