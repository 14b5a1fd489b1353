// service_notifier.cc: tells systemd READY, RELOADING, STOPPING and STATUS, and feeds the watchdog.

#include "main/service_notifier.h"

#include <systemd/sd-daemon.h>
#include <time.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"
#include "base/log.h"
#include "server/shard.h"  // kTickInterval: how often an idle shard turns

namespace chute {

ServiceNotifier::ServiceNotifier(const server::Server* server) : server_(server) {
  const char* socket = std::getenv("NOTIFY_SOCKET");
  enabled_ = socket != nullptr && socket[0] != '\0';
  uint64_t watchdog_us = 0;
  // 0 unsets nothing: a reload or a later check reads the same environment.
  if (enabled_ && sd_watchdog_enabled(0, &watchdog_us) > 0 && watchdog_us > 0) {
    watchdog_interval_ = absl::Microseconds(watchdog_us) / 2;
    if (watchdog_interval_ < 2 * server::kTickInterval) {
      // An idle shard turns once per tick: a shorter half period would see it as stuck.
      LOG_WARNING("WatchdogSec is %d ms; below %d s an idle shard may look stuck",
                  static_cast<int64_t>(watchdog_us / 1000),
                  absl::ToInt64Seconds(4 * server::kTickInterval));
    }
  }
}

void ServiceNotifier::Send(const std::string& state) {
  if (!enabled_) {
    return;
  }
  int rc = sd_notify(0, state.c_str());
  if (rc < 0) {
    LOG_WARNING_EVERY(60, "sd_notify: %s", std::strerror(-rc));
  }
}

void ServiceNotifier::SendStatus() {
  Send(absl::StrCat("STATUS=", server_->connections_open(), " connection(s), ",
                    server_->queued_messages(), " message(s) queued"));
}

void ServiceNotifier::Ready() {
  if (!enabled_) {
    return;
  }
  absl::Time now = absl::Now();
  // The baseline: a shard still setting up its ring has not turned yet; it has by the first
  // check, half a watchdog period later.
  last_turns_.clear();
  for (int i = 0; i < server_->shard_count(); ++i) {
    last_turns_.push_back(server_->counters(i).loop_turns.Get());
  }
  Send("READY=1");
  SendStatus();
  next_status_ = now + kStatusInterval;
  if (watchdog_interval_ != absl::InfiniteDuration()) {
    Send("WATCHDOG=1");
    next_watchdog_ = now + watchdog_interval_;
  }
}

void ServiceNotifier::Reloading() {
  timespec monotonic{};
  clock_gettime(CLOCK_MONOTONIC, &monotonic);
  uint64_t monotonic_us = static_cast<uint64_t>(monotonic.tv_sec) * 1000000 +
                          static_cast<uint64_t>(monotonic.tv_nsec) / 1000;
  Send(absl::StrCat("RELOADING=1\nMONOTONIC_USEC=", monotonic_us));
}

void ServiceNotifier::Reloaded() {
  Send("READY=1");
  SendStatus();
}

void ServiceNotifier::Stopping() {
  Send("STOPPING=1\nSTATUS=draining: no new connections, sessions in progress finish");
  next_status_ = absl::InfiniteFuture();
  next_watchdog_ = absl::InfiniteFuture();
}

void ServiceNotifier::Tick(absl::Time now) {
  if (now >= next_status_) {
    SendStatus();
    next_status_ = now + kStatusInterval;
  }
  if (now >= next_watchdog_) {
    if (ShardsTurned()) {
      Send("WATCHDOG=1");
    }
    next_watchdog_ = now + watchdog_interval_;
  }
}

absl::Time ServiceNotifier::NextDue() const { return std::min(next_status_, next_watchdog_); }

bool ServiceNotifier::ShardsTurned() {
  bool all = true;
  for (size_t i = 0; i < last_turns_.size(); ++i) {
    uint64_t turns = server_->counters(static_cast<int>(i)).loop_turns.Get();
    if (turns == last_turns_[i]) {
      LOG_ERROR(
          "shard %d: its event loop has not turned for %d ms; withholding the watchdog "
          "ping",
          static_cast<int64_t>(i), absl::ToInt64Milliseconds(watchdog_interval_));
      all = false;
    }
    last_turns_[i] = turns;
  }
  return all;
}

}  // namespace chute
