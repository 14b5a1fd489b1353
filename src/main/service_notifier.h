#pragma once

// ServiceNotifier: chuted's side of systemd's notification protocol (sd_notify(3)), used when
// the service manager set NOTIFY_SOCKET (Type=notify); without it every call does nothing.
//
// READY=1 goes out once the spool is replayed and the listeners are open; RELOADING=1 (with
// MONOTONIC_USEC) and READY=1 bracket a SIGHUP reload; STOPPING=1 starts the drain. A STATUS=
// line with the open connections and the queued messages goes out every kStatusInterval.
//
// The watchdog (WatchdogSec=, seen as WATCHDOG_USEC): every half period the main thread looks
// at each shard's loop counter (ShardCounters::loop_turns, which the shard's own thread bumps
// on every turn of its event loop and at least once per tick when idle). WATCHDOG=1 is sent
// only when every shard turned since the last look; a shard that did not is named in the log
// and the ping is withheld, so systemd restarts a relay whose event loop is stuck. The
// delivery workers are not watched here (they block on their targets by design, with their
// own timeouts).
//
// Threads: main thread only.

#include <cstdint>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "server/server.h"

namespace chute {

// How often STATUS= is refreshed.
inline constexpr absl::Duration kStatusInterval = absl::Seconds(5);

class ServiceNotifier {
 public:
  // ServiceNotifier: reads NOTIFY_SOCKET and WATCHDOG_USEC (WATCHDOG_PID, when set, must be
  // ours). `server` must outlive it and be started before Ready().
  explicit ServiceNotifier(const server::Server* server);

  // Ready: the first READY=1 (and the first status and watchdog ping).
  void Ready();
  // Reloading, Reloaded: around a SIGHUP reload.
  void Reloading();
  void Reloaded();
  void Stopping();
  // Tick: sends what is due (STATUS=, WATCHDOG=1). Call it at least every NextDue() - now.
  void Tick(absl::Time now);
  // NextDue: when Tick has something to send next (InfiniteFuture when nothing ever is).
  absl::Time NextDue() const;

 private:
  void Send(const std::string& state);
  void SendStatus();
  // ShardsTurned: whether every shard's loop turned since the last call (logs the ones that
  // did not).
  bool ShardsTurned();

  const server::Server* server_;
  bool enabled_ = false;
  absl::Duration watchdog_interval_ = absl::InfiniteDuration();  // half of WATCHDOG_USEC
  absl::Time next_status_ = absl::InfiniteFuture();
  absl::Time next_watchdog_ = absl::InfiniteFuture();
  std::vector<uint64_t> last_turns_;
};

}  // namespace chute
