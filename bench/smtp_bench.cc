// smtp_bench: throughput of the SMTP core, with memchr over the same bytes as the reference
// (the aim: body scanning at memchr speed). It measures; it asserts nothing.
//
//   build/bin/smtp_bench                      # all
//   build/bin/smtp_bench --benchmark_filter=Body
//
// Compare BM_ScanBody and BM_SessionBody against BM_MemchrReference of the same size: the
// ratio is what matters on a shared, noisy machine.

#include <benchmark/benchmark.h>

#include <cstring>
#include <memory>
#include <string>

#include "smtp/body_scanner.h"
#include "smtp/session.h"

namespace chute::smtp {
namespace {

// A message body of `bytes` octets of 78-octet text lines, one in 50 starting with a
// (stuffed) dot, as DATA sends it, ending with CR LF . CR LF.
std::string MakeDataBody(size_t bytes) {
  std::string body;
  body.reserve(bytes + 128);
  size_t line = 0;
  while (body.size() < bytes) {
    if (line++ % 50 == 49) {
      body += "..";
      body += std::string(74, 'd');
    } else {
      body += "The quick brown fox jumps over the lazy dog; payroll run 2026-11 line ";
      body += std::string(6, 'x');
    }
    body += "\r\n";
  }
  body += ".\r\n";
  return body;
}

void BM_MemchrReference(benchmark::State& state) {
  std::string body = MakeDataBody(static_cast<size_t>(state.range(0)));
  for (auto _ : state) {
    const void* hit = std::memchr(body.data(), '\0', body.size());
    benchmark::DoNotOptimize(hit);
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * body.size()));
}
BENCHMARK(BM_MemchrReference)->Arg(10 << 10)->Arg(1 << 20);

void BM_ScanBody(benchmark::State& state) {
  std::string body = MakeDataBody(static_cast<size_t>(state.range(0)));
  BodyScanner scanner;
  size_t content = 0;
  for (auto _ : state) {
    scanner.Reset(BodyScanner::Mode::kData);
    size_t consumed = scanner.Scan(body, [&](absl::string_view s) { content += s.size(); });
    benchmark::DoNotOptimize(consumed);
  }
  benchmark::DoNotOptimize(content);
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * body.size()));
}
BENCHMARK(BM_ScanBody)->Arg(10 << 10)->Arg(1 << 20);

class NullHandler : public SessionHandler {
 public:
  std::optional<Reply> OnAuth(const AuthRequest&) override { return kReplyAuthOk; }
  std::optional<Reply> OnMail(const MailArgs&) override { return kReplySenderOk; }
  std::optional<Reply> OnRcpt(const RcptArgs&) override { return kReplyRecipientOk; }
  void OnBodyBegin() override {}
  void OnBodySlice(absl::string_view slice) override { bytes += slice.size(); }
  std::optional<Reply> OnBodyEnd() override { return kReplyMessageAccepted; }
  void OnTransactionAbort() override {}
  void OnStartTls() override {}
  size_t bytes = 0;
};

std::unique_ptr<Session> ReadySession(NullHandler* handler) {
  SessionOptions options;
  options.tls_required = false;
  options.starttls_offered = false;
  options.message_size_bytes = 64 << 20;
  auto session = std::make_unique<Session>(options, handler);
  session->MarkAuthenticated();
  session->Start(absl::UnixEpoch());
  session->Feed("EHLO bench.test\r\n", absl::UnixEpoch());
  return session;
}

// The whole session path for one message: envelope, DATA, the body fed in 16 KiB pieces (the
// size of a provided receive buffer), the end.
void BM_SessionBody(benchmark::State& state) {
  std::string message = "MAIL FROM:<app@example.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n" +
                        MakeDataBody(static_cast<size_t>(state.range(0)));
  NullHandler handler;
  std::unique_ptr<Session> session = ReadySession(&handler);
  std::string out;
  constexpr size_t kPieceBytes = 16 << 10;
  for (auto _ : state) {
    for (size_t pos = 0; pos < message.size(); pos += kPieceBytes) {
      absl::string_view piece = absl::string_view(message).substr(pos, kPieceBytes);
      size_t consumed = session->Feed(piece, absl::UnixEpoch());
      if (consumed != piece.size()) {
        state.SkipWithError("session did not consume its input");
        return;
      }
    }
    session->SwapOutput(out);
    out.clear();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * message.size()));
}
BENCHMARK(BM_SessionBody)->Arg(10 << 10)->Arg(1 << 20);

// Pipelined envelopes: MAIL, 3 RCPT, DATA with a one-line body, RSET: commands per second.
void BM_PipelinedEnvelopes(benchmark::State& state) {
  std::string group;
  constexpr int kGroups = 64;
  for (int i = 0; i < kGroups; ++i) {
    group +=
        "MAIL FROM:<app@example.test> SIZE=1000 BODY=8BITMIME\r\nRCPT TO:<a@example.test>\r\n"
        "RCPT TO:<b@example.test>\r\nRCPT TO:<c@example.test>\r\nDATA\r\nhi\r\n.\r\nRSET\r\n";
  }
  constexpr int kCommandsPerGroup = 6;
  NullHandler handler;
  std::unique_ptr<Session> session = ReadySession(&handler);
  std::string out;
  for (auto _ : state) {
    size_t consumed = session->Feed(group, absl::UnixEpoch());
    benchmark::DoNotOptimize(consumed);
    session->SwapOutput(out);
    out.clear();
  }
  state.SetItemsProcessed(state.iterations() * kGroups * kCommandsPerGroup);
}
BENCHMARK(BM_PipelinedEnvelopes);

}  // namespace
}  // namespace chute::smtp
