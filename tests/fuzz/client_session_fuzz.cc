// libFuzzer target for chute-load's ClientSession (tools/chute-load/client_session.h) and the
// smtp::ClientSession it drives: a
// server's replies as arbitrary bytes. The first byte chooses the session's configuration
// (TLS mode, AUTH mechanism, BDAT, pipelining, hold) and where the rest is split. Invariants:
// - no crash, no UB (built with ASan+UBSan);
// - at most one message is in flight, and the in-flight count never goes below zero;
// - without STARTTLS (whose 220 makes the rest of the same read a protocol error, while what
//   comes in a later read is taken as TLS), the split does not matter: fed whole and fed in
//   pieces, the same bytes go out and the same errors are counted;
// - once done, the session sends nothing more.
//
// Build and run: tools/fuzz.sh [SECONDS] client_session_fuzz (preset "fuzz", clang).

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "absl/strings/string_view.h"
#include "tools/chute-load/client_session.h"

namespace {

using chute::load::AuthMech;
using chute::load::ClientSession;
using chute::load::Job;
using chute::load::JobSource;
using chute::load::SessionConfig;
using chute::load::Stats;
using chute::load::TlsMode;

class Source : public JobSource {
 public:
  bool Take(int64_t now_us, Job* job, uint64_t* size_bytes) override {
    if (taken_ >= 3) {
      return false;
    }
    job->seq = taken_++;
    job->scheduled_us = now_us;
    *size_bytes = 200;
    return true;
  }
  bool Exhausted(int64_t) const override { return taken_ >= 3; }

 private:
  uint64_t taken_ = 0;
};

void Check(bool condition) {
  if (!condition) {
    abort();
  }
}

struct Run {
  std::string sent;
  Stats stats;
};

void Drive(const SessionConfig& config, absl::string_view input, size_t piece, Run* run) {
  Source source;
  ClientSession session(config, &source, &run->stats);
  session.Start(0);
  int64_t now = 0;
  while (!input.empty()) {
    size_t n = piece == 0 ? input.size() : std::min(piece, input.size());
    bool was_done = session.done();
    session.OnInput(input.substr(0, n), ++now);
    input.remove_prefix(n);
    if (session.wants_tls()) {
      session.OnTlsDone(++now);
    }
    Check(!was_done || session.output()->empty());
    Check(run->stats.in_flight.load() <= 1);
    run->sent += *session.output();
    session.output()->clear();
  }
  session.OnClosed("closed", ++now);
  Check(run->stats.in_flight.load() == 0);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) {
    return 0;
  }
  uint8_t choice = data[0];
  absl::string_view input(reinterpret_cast<const char*>(data + 1), size - 1);
  SessionConfig config;
  config.tls = (choice & 1) != 0 ? TlsMode::kStartTls : TlsMode::kNone;
  config.auth = static_cast<AuthMech>((choice >> 1) & 3);
  config.user = "app@example.test";
  config.secret = "secret";
  config.from = "app@example.test";
  config.to = {"u{n}@example.test"};
  config.rcpts = 1 + ((choice >> 3) & 1);
  config.bdat = (choice & 0x10) != 0;
  config.pipelining = (choice & 0x20) != 0;
  config.hold = (choice & 0x40) != 0;
  size_t piece = 1 + (choice >> 7) * 6;
  Run whole;
  Drive(config, input, 0, &whole);
  Run pieces;
  Drive(config, input, piece, &pieces);
  if (config.tls == TlsMode::kNone) {
    Check(whole.sent == pieces.sent);
    Check(whole.stats.errors == pieces.stats.errors);
    Check(whole.stats.messages.load() == pieces.stats.messages.load());
  }
  return 0;
}
