#pragma once

// Runner: one thread's share of a run: one io_uring (src/io Ring: SINGLE_ISSUER |
// DEFER_TASKRUN where the kernel has them), up to `connections` TCP connections to the target,
// each a ClientSession over plaintext or a BoringSSL client TlsStream (src/net), and the
// thread's Schedule of messages. No thread per connection: every socket operation (connect,
// recv, send) is an io_uring request; the loop waits for completions with a timeout no
// longer than kTickUs, which also drives the open-loop schedule and the reply deadlines.
//
// Connection policy (RunnerConfig): `reopen` opens a new connection when one ends while
// messages remain (persistent, reconnect); `on_demand` opens one only for a message that no
// connection on its way will take (reconnect: with a rate, the printer connects when it has
// something to print, so connect, TLS and AUTH count in the message's latency; with a count,
// no connection is opened for a message that another one will send); `hold` stops every session
// once it is ready and calls `on_quiescent` when no session is still on its way (idle, caps), then
// ends them all.
//
// Owned and run by one thread; Stats may be read (its atomics) from another for progress.

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "base/net_address.h"
#include "io/ring.h"
#include "net/tls.h"
#include "net/transport.h"
#include "tools/chute-load/client_session.h"
#include "tools/chute-load/schedule.h"
#include "tools/chute-load/stats.h"

namespace chute::load {

// kTickUs: the longest the loop sleeps; bounds how late an open-loop send or a timeout is seen.
inline constexpr int64_t kTickUs = 1000;
// kRecvBytes: one connection's receive buffer (SMTP replies are small; TLS records arrive in
// several receives when larger).
inline constexpr size_t kRecvBytes = 4096;
// kRingEntriesMax: submission queue size cap (each connection has at most two operations out).
inline constexpr unsigned kRingEntriesMax = 4096;

struct RunnerConfig {
  HostPort target;
  SessionConfig session;
  TlsMode tls = TlsMode::kNone;
  int connections = 1;             // this thread's concurrent connections
  uint64_t connections_total = 0;  // 0 = no bound on connections opened (burst: N)
  bool reopen = false;
  bool on_demand = false;
  std::vector<IpBytes> sources;     // bind to these source addresses in turn (empty: any)
  int per_source_max = 0;           // connections per source before moving to the next
  int64_t timeout_us = 30'000'000;  // a reply, the connect, the handshake
  std::vector<SizeBucket> sizes;
  uint64_t seed = 1;
  uint64_t errors_max = 0;  // stop once run_errors reaches it (0 = never)
  std::atomic<uint64_t>* run_errors = nullptr;
  std::function<void()> on_quiescent;  // hold: called once every session is ready or gone
};

class Runner : public JobSource {
 public:
  // Runner: `schedule` decides when messages are due (copied).
  Runner(RunnerConfig config, Schedule schedule);
  ~Runner() override;

  // Run: the whole run on the calling thread. Errors only for a local failure (no ring, no
  // sockets); the target's failures are counted in stats().
  absl::Status Run();
  Stats& stats() { return stats_; }

  // JobSource (the sessions ask).
  bool Take(int64_t now_us, Job* job, uint64_t* size_bytes) override;
  bool Exhausted(int64_t now_us) const override;

 private:
  struct Conn;
  void Open(size_t index, int64_t now_us);
  void Pump(Conn& conn, int64_t now_us);
  // StartTls: the connection's transport turns TLS (a client stream); the handshake is due
  // by conn.deadline_us (the sweep ends it), which the caller sets.
  void StartTls(Conn& conn, int64_t now_us);
  void ArmRecv(Conn& conn);
  void ArmSend(Conn& conn);
  void Close(Conn& conn, absl::string_view why, int64_t now_us);
  void MaybeFree(Conn& conn);
  void OnCompletion(uint64_t user_data, int res, int64_t now_us);
  void Maintain(int64_t now_us);
  // MayOpenMore: the run may still open connections (later, if not now).
  bool MayOpenMore(int64_t now_us) const;
  // WantsNewConnection: a connection should be opened now, `on_the_way` being the ones
  // opened that have not started a message yet (OnTheWay).
  bool WantsNewConnection(int64_t now_us, size_t on_the_way) const;
  size_t OnTheWay() const;

  RunnerConfig config_;
  Schedule schedule_;
  Stats stats_;
  std::unique_ptr<io::Ring> ring_;
  std::shared_ptr<net::TlsContext> tls_context_;
  std::vector<std::unique_ptr<Conn>> conns_;
  std::vector<size_t> free_;
  size_t active_ = 0;
  uint64_t opened_ = 0;
  bool stopping_ = false;
  bool quiescent_called_ = false;
  std::mt19937_64 rng_;
  int64_t last_sweep_us_ = 0;
};

}  // namespace chute::load
