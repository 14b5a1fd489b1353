// body_scanner_test.cc: unit tests for the body scanner: end of data, dots, bare line endings.

#include "smtp/body_scanner.h"

#include <gtest/gtest.h>

#include <string>

#include "absl/strings/match.h"

namespace chute::smtp {
namespace {

struct Result {
  std::string content;
  size_t consumed = 0;
  size_t slices = 0;
  bool done = false;
  BodyScanner::Fault fault = BodyScanner::Fault::kNone;
};

// Scan `input` in pieces of `piece` bytes (0 = at once), stopping at the end of data.
Result ScanAll(BodyScanner::Mode mode, absl::string_view input, size_t piece = 0,
               bool normalize_bare_lf = false) {
  BodyScanner scanner;
  scanner.Reset(mode, normalize_bare_lf);
  Result r;
  size_t pos = 0;
  while (pos < input.size() && !scanner.done()) {
    size_t n = piece == 0 ? input.size() - pos : std::min(piece, input.size() - pos);
    size_t consumed = scanner.Scan(input.substr(pos, n), [&](absl::string_view s) {
      ++r.slices;
      r.content.append(s.data(), s.size());
    });
    pos += consumed;
    if (consumed < n) {
      break;
    }
  }
  if (mode == BodyScanner::Mode::kChunk) {
    scanner.Finish();
  }
  r.consumed = pos;
  r.done = scanner.done();
  r.fault = scanner.fault();
  return r;
}

TEST(BodyScannerTest, FindLineSpecialFindsEachKindAtEveryOffset) {
  for (char special : {'\r', '\n', '\0'}) {
    for (size_t at = 0; at < 70; ++at) {
      std::string text(80, 'a');
      text[at] = special;
      EXPECT_EQ(FindLineSpecial(text.data(), text.size()), at);
    }
  }
  std::string clean(100, 'z');
  EXPECT_EQ(FindLineSpecial(clean.data(), clean.size()), 100u);
  EXPECT_EQ(FindLineSpecial(clean.data(), 0), 0u);
}

TEST(BodyScannerTest, DataEndsOnlyAtCrLfDotCrLf) {
  std::string input = "a\r\nb\r\n.\r\nNEXT";
  for (size_t piece : {0, 1, 2, 3, 5}) {
    Result r = ScanAll(BodyScanner::Mode::kData, input, piece);
    EXPECT_TRUE(r.done);
    EXPECT_EQ(r.consumed, input.size() - 4) << piece;
    EXPECT_EQ(r.content, "a\r\nb\r\n");
    EXPECT_EQ(r.fault, BodyScanner::Fault::kNone);
  }
}

TEST(BodyScannerTest, DotUnstuffing) {
  Result r = ScanAll(BodyScanner::Mode::kData, "..\r\n...x\r\n. y\r\n.\r\n");
  EXPECT_EQ(r.content, ".\r\n..x\r\n y\r\n");
  EXPECT_EQ(r.slices, 3u);  // split only where a stuffed dot was removed
}

TEST(BodyScannerTest, DotInsideALineIsContent) {
  Result r = ScanAll(BodyScanner::Mode::kData, "a.\r\nb .\r\n.\r\n");
  EXPECT_EQ(r.content, "a.\r\nb .\r\n");
  EXPECT_EQ(r.slices, 1u);
}

TEST(BodyScannerTest, BareLineEndingsAreFaultsAndNeverEndData) {
  for (absl::string_view fake : {"\n.\n", "\n.\r\n", "\r.\r\n", "\r\n.\n", "\r\n.\r\r\n"}) {
    std::string input = std::string("x") + std::string(fake) + "y\r\n.\r\n";
    Result r = ScanAll(BodyScanner::Mode::kData, input);
    EXPECT_TRUE(r.done) << fake;
    EXPECT_EQ(r.consumed, input.size()) << "only the real end ends: " << fake;
    EXPECT_EQ(r.fault, BodyScanner::Fault::kBareLineEnding);
  }
}

TEST(BodyScannerTest, NormalizeTurnsBareLfIntoCrLfAtEverySplit) {
  const std::string input = "a\nb\r\n\nc\r\n.\r\nrest";
  for (size_t piece = 0; piece <= 6; ++piece) {
    Result r = ScanAll(BodyScanner::Mode::kData, input, piece, true);
    EXPECT_EQ(r.fault, BodyScanner::Fault::kNone) << piece;
    EXPECT_TRUE(r.done) << piece;
    EXPECT_EQ(r.content, "a\r\nb\r\n\r\nc\r\n") << piece;
    EXPECT_EQ(r.consumed, input.size() - 4) << piece;
  }
}

TEST(BodyScannerTest, NormalizeNeverEndsDataAfterABareLf) {
  // Smuggling through normalization: "\n.\r\n" and "\n.\n" are text, not the end.
  for (absl::string_view input :
       {"x\n.\r\nMAIL FROM:<a@b>\r\n.\r\n", "x\n.\nMAIL FROM:<a@b>\r\n.\r\n"}) {
    Result r = ScanAll(BodyScanner::Mode::kData, input, 0, true);
    EXPECT_TRUE(r.done);
    EXPECT_EQ(r.consumed, input.size());
    EXPECT_EQ(r.fault, BodyScanner::Fault::kNone);
    EXPECT_NE(r.content.find("MAIL FROM:<a@b>\r\n"), std::string::npos);
  }
}

TEST(BodyScannerTest, NormalizeStillRejectsBareCrAndNul) {
  EXPECT_EQ(ScanAll(BodyScanner::Mode::kData, "a\rb\r\n.\r\n", 0, true).fault,
            BodyScanner::Fault::kBareLineEnding);
  EXPECT_EQ(ScanAll(BodyScanner::Mode::kData, std::string("a\0b\r\n.\r\n", 9), 0, true).fault,
            BodyScanner::Fault::kBareLineEnding);
}

TEST(BodyScannerTest, NulIsAFault) {
  Result r = ScanAll(BodyScanner::Mode::kData, absl::string_view("a\0b\r\n.\r\n", 8));
  EXPECT_EQ(r.fault, BodyScanner::Fault::kBareLineEnding);
}

TEST(BodyScannerTest, NoContentAfterAFault) {
  // What came before the fault may already have been passed on (the message is dropped
  // anyway); nothing after it ever is.
  absl::string_view input = "good\r\nbad\nmore\r\n.\r\n";
  for (size_t piece : {0, 1, 4}) {
    Result r = ScanAll(BodyScanner::Mode::kData, input, piece);
    EXPECT_EQ(r.fault, BodyScanner::Fault::kBareLineEnding);
    EXPECT_TRUE(absl::StartsWith("good\r\nbad", r.content)) << piece << ": " << r.content;
  }
}

TEST(BodyScannerTest, LineLengthAtAndAboveTheLimit) {
  std::string at = std::string(998, 'a') + "\r\n.\r\n";
  EXPECT_EQ(ScanAll(BodyScanner::Mode::kData, at).fault, BodyScanner::Fault::kNone);
  std::string dotted = "." + std::string(998, 'a') + "\r\n.\r\n";  // 1001 on the wire
  EXPECT_EQ(ScanAll(BodyScanner::Mode::kData, dotted).fault, BodyScanner::Fault::kLineTooLong);
  std::string over = std::string(999, 'a') + "\r\n.\r\n";
  EXPECT_EQ(ScanAll(BodyScanner::Mode::kData, over, 7).fault, BodyScanner::Fault::kLineTooLong);
}

TEST(BodyScannerTest, BareLineEndingOutranksLineLength) {
  std::string input = std::string(1200, 'a') + "\n\r\n.\r\n";
  EXPECT_EQ(ScanAll(BodyScanner::Mode::kData, input).fault, BodyScanner::Fault::kBareLineEnding);
}

TEST(BodyScannerTest, ChunkModeTakesDotsAsIs) {
  Result r = ScanAll(BodyScanner::Mode::kChunk, ".\r\n..\r\n.\r\n");
  EXPECT_EQ(r.content, ".\r\n..\r\n.\r\n");
  EXPECT_EQ(r.fault, BodyScanner::Fault::kNone);
  EXPECT_TRUE(r.done);
}

TEST(BodyScannerTest, ChunkModeTrailingCrAndLongLastLine) {
  EXPECT_EQ(ScanAll(BodyScanner::Mode::kChunk, "abc\r").fault, BodyScanner::Fault::kBareLineEnding);
  EXPECT_EQ(ScanAll(BodyScanner::Mode::kChunk, "abc").fault, BodyScanner::Fault::kNone);
  EXPECT_EQ(ScanAll(BodyScanner::Mode::kChunk, std::string(998, 'a')).fault,
            BodyScanner::Fault::kNone);
  EXPECT_EQ(ScanAll(BodyScanner::Mode::kChunk, std::string(999, 'a')).fault,
            BodyScanner::Fault::kLineTooLong);
}

TEST(BodyScannerTest, EverySplitOfAMessageGivesTheSameContent) {
  std::string input = "From: a\r\n\r\n..x\r\n.y\r\nz.\r\n\r\n..\r\nend\r\n.\r\n";
  Result whole = ScanAll(BodyScanner::Mode::kData, input);
  for (size_t piece = 1; piece < input.size(); ++piece) {
    Result r = ScanAll(BodyScanner::Mode::kData, input, piece);
    EXPECT_EQ(r.content, whole.content) << piece;
    EXPECT_EQ(r.consumed, whole.consumed) << piece;
  }
}

}  // namespace
}  // namespace chute::smtp
