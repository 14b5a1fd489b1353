// log_test.cc: unit tests for event lines (text, JSON), the journal sink and histograms.

#include "base/log.h"

#include <sys/socket.h>
#include <unistd.h>

#include <string>

#include "base/histogram.h"
#include "gtest/gtest.h"

namespace chute {
namespace {

TEST(LogEventTest, TextIsKeyValueWithQuotesOnlyWhereNeeded) {
  std::string line = FormatEventText("delivery", {{"queue_id", "ABC"},
                                                  {"attempt", 3},
                                                  {"reply", "250 2.0.0 ok"},
                                                  {"empty", ""},
                                                  {"quote", "a\"b\\c"},
                                                  {"eq", "a=b"}});
  EXPECT_EQ(line,
            "event=delivery queue_id=ABC attempt=3 reply=\"250 2.0.0 ok\" empty=\"\" "
            "quote=\"a\\\"b\\\\c\" eq=\"a=b\"");
}

TEST(LogEventTest, ControlCharactersCannotForgeALine) {
  // A recipient with CR LF in it (peer input) must stay on one line.
  std::string line = FormatEventText("rcpt.refused", {{"recipient", "a\r\nevent=fake"}});
  EXPECT_EQ(line.find('\n'), std::string::npos);
  EXPECT_EQ(line.find('\r'), std::string::npos);
  EXPECT_EQ(line, "event=rcpt.refused recipient=\"a\\x0d\\x0aevent=fake\"");
}

TEST(LogEventTest, JsonEscapesAndCarriesLevelAndTime) {
  std::string line =
      FormatEventJson(LogLevel::kWarning, "auth.failed", {{"user", "x\"\n"}, {"code", 535}});
  EXPECT_EQ(line.rfind("{\"ts\":\"", 0), 0u) << line;
  EXPECT_NE(line.find("\"level\":\"warning\",\"event\":\"auth.failed\",\"user\":\"x\\\"\\u000a\","
                      "\"code\":\"535\"}"),
            std::string::npos)
      << line;
}

TEST(LogSinkTest, AJournalThatDoesNotReadDropsLinesInsteadOfStallingTheLogger) {
  // stderr becomes a socket nobody reads, as systemd's journal stream is when journald stalls.
  int pair[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, pair), 0);
  int small = 4096;
  setsockopt(pair[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
  int saved = dup(STDERR_FILENO);
  ASSERT_GE(saved, 0);
  ASSERT_EQ(dup2(pair[0], STDERR_FILENO), STDERR_FILENO);
  ProbeLogSink();
  uint64_t dropped_before = LogLinesDropped();
  const std::string line(200, 'x');
  for (int i = 0; i < 5000; ++i) {
    LogLine(LogLevel::kError, line);  // would block for ever on a blocking write
  }
  uint64_t dropped = LogLinesDropped() - dropped_before;
  ASSERT_EQ(dup2(saved, STDERR_FILENO), STDERR_FILENO);
  close(saved);
  ProbeLogSink();
  EXPECT_GT(dropped, 0u);
  EXPECT_LT(dropped, 5000u);  // the lines that had room went out
  // What went out starts with whole lines.
  char first[210] = {};
  ASSERT_EQ(read(pair[1], first, 205), 205);
  EXPECT_EQ(std::string(first, 205), "<3>" + line + "\n<");
  close(pair[0]);
  close(pair[1]);
}

TEST(LatencyHistogramTest, ObservationsFallInTheirBucketsWithTheSum) {
  // The exposition of these buckets is tested in tests/unit/metrics/registry_test.cc.
  LatencyHistogram h;
  h.Observe(40);          // 40 µs: the first bucket (≤ 50 µs)
  h.Observe(1000);        // exactly 1 ms: the ≤ 0.001 bucket
  h.Observe(90'000'000);  // 90 s: only +Inf
  uint64_t totals[LatencyHistogram::kBuckets] = {};
  uint64_t sum_us = 0;
  h.AddTo(totals, &sum_us);
  EXPECT_EQ(totals[0], 1u);
  EXPECT_EQ(LatencyHistogram::kBoundsS[4], 0.001);
  EXPECT_EQ(totals[4], 1u);
  EXPECT_EQ(totals[LatencyHistogram::kBuckets - 1], 1u);
  uint64_t observed = 0;
  for (uint64_t count : totals) {
    observed += count;
  }
  EXPECT_EQ(observed, 3u);
  EXPECT_EQ(sum_us, 90'001'040u);
}

}  // namespace
}  // namespace chute
