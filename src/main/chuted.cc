// chuted: the chute mail relay server. See --help.
//
// Exit status: 0 after a clean stop (SIGTERM/SIGINT) or a good --check-config, 1 on a usage
// error, 2 on a failure it explains on stderr that a restart would not fix (the unit's
// RestartPreventExitStatus=), 3 when a shard failed while running (the unit restarts it).

#include <signal.h>
#include <sys/resource.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <iostream>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "base/config.h"
#include "base/log.h"
#include "base/memory.h"
#include "base/version.h"
#include "main/service_notifier.h"
#include "server/server.h"

#ifndef CHUTE_NO_MIMALLOC
#include <mimalloc.h>
#endif

namespace chute {
namespace {

constexpr const char* kDefaultConfigPath = "/etc/chute/chute.toml";
// The exit status when a shard failed while running: not 2 (a failure at start that a restart
// does not fix, which the unit does not restart), so that systemd restarts chuted.
constexpr int kExitShardFailed = 3;
// How often the directory database is checked for changes made by chutectl.
constexpr int kDirectoryPollSeconds = 2;

constexpr const char* kUsage = R"(Usage: chuted [--config FILE] [--check-config] [--log-level LEVEL]
       chuted --reload PID

chute's mail relay server: accepts mail over SMTP and delivers it to the organisation's
mailboxes (Maildir). It runs in the foreground and logs to stderr (journald-ready).

Options:
  --config FILE       the TOML configuration (default /etc/chute/chute.toml); every key is
                      optional and documented in docs/configuration.md and chute.toml(5)
  --check-config      load and check the configuration and what it refers to (certificate
                      and key, the directory database, authenticate_as accounts), print the
                      resolved paths, and exit
  --log-level LEVEL   error, warning, info (default) or debug
  --reload PID        send the running chuted PID a SIGHUP (a reload, see below) and exit:
                      the unit's ExecReload=, which so needs no kill(1)
  --version           the version and the git revision it was built from
  --help              this text

Signals: SIGTERM/SIGINT stop gracefully (idle sessions get 421 4.3.2, messages in progress
finish); SIGHUP reloads the configuration (host name, per-session limits, connections_max and
certificate paths apply to new sessions; other changed keys are logged as needing a restart),
the TLS certificate and the directory (which is also reloaded by itself within seconds of a
chutectl change). A bad file is logged and the running one kept.

Under systemd (Type=notify, NOTIFY_SOCKET set) it reports READY=1 once the spool is replayed
and the listeners are open, RELOADING=1/READY=1 around a reload, STOPPING=1, a STATUS= line
(connections, queued messages), and WATCHDOG=1 only while every shard's event loop turns.

Exit status: 0 clean stop, 1 usage error, 2 failure explained on stderr (the configuration,
the certificate, a port in use, a locked spool: systemd does not restart it), 3 a shard failed
while running (systemd restarts it).
)";

// RaiseFileLimit: the soft RLIMIT_NOFILE up to the hard one (every connection, segment and
// delivery socket is a descriptor), logging the figure an operator will want to know: the
// limit in force, and "raised from" only when it was raised.
void RaiseFileLimit() {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) {
    return;
  }
  const auto before = static_cast<int64_t>(limit.rlim_cur);
  const auto hard = static_cast<int64_t>(limit.rlim_max);
  if (limit.rlim_cur >= limit.rlim_max) {
    LOG_INFO("file descriptors: %d (the hard limit)", before);
    return;
  }
  limit.rlim_cur = limit.rlim_max;
  if (setrlimit(RLIMIT_NOFILE, &limit) != 0) {
    LOG_WARNING("file descriptors: %d (the soft limit; raising it to the hard limit %d failed: %s)",
                before, hard, std::strerror(errno));
    return;
  }
  LOG_INFO("file descriptors: %d (soft limit raised from %d to the hard limit)", hard, before);
}

// PollDirectory: the periodic work of the main thread: usage counts to SQLite, and the
// directory reloaded when chutectl changed it.
void PollDirectory(server::Server& server) {
  absl::Status usage = server.FlushUsage();
  if (!usage.ok()) {
    LOG_WARNING("usage counts not saved yet: %s", usage.message());
  }
  absl::Status reload = server.ReloadDirectory(false);
  if (!reload.ok()) {
    LOG_WARNING("directory reload failed, keeping the current one: %s", reload.message());
  }
}

// Reload: SIGHUP: the directory (forced), the configuration and the certificate. A part that
// fails to load is logged and the running one kept.
void Reload(server::Server& server, const std::string& config_path) {
  absl::Status usage = server.FlushUsage();
  if (!usage.ok()) {
    LOG_WARNING("usage counts not saved yet: %s", usage.message());
  }
  absl::Status reload = server.ReloadDirectory(true);
  if (!reload.ok()) {
    LOG_WARNING("directory reload failed, keeping the current one: %s", reload.message());
  }
  absl::Status config = server.ReloadConfig(config_path);
  if (!config.ok()) {
    LOG_ERROR("configuration reload failed, keeping the running one: %s", config.message());
  }
  absl::Status tls = server.ReloadTls();
  if (!tls.ok()) {
    LOG_ERROR("certificate reload failed, keeping the current one: %s", tls.message());
  }
}

// SignalReload: --reload PID: a SIGHUP to the chuted PID (the unit's ExecReload=/usr/sbin/chuted
// --reload $MAINPID; /bin/kill is procps', which a minimal system does not have).
int SignalReload(const std::string& pid_text) {
  int pid = 0;
  if (!absl::SimpleAtoi(pid_text, &pid) || pid <= 1) {
    std::cerr << "chuted: --reload: '" << pid_text << "' is not the process id of a chuted\n";
    return 1;
  }
  if (kill(pid, SIGHUP) != 0) {
    std::cerr << "chuted: --reload: cannot signal process " << pid << ": " << std::strerror(errno)
              << "\n";
    return 2;
  }
  return 0;
}

int Main(int argc, char** argv) {
  if (argc == 3 && std::string(argv[1]) == "--reload") {
    return SignalReload(argv[2]);
  }
  ProbeLogSink();
  std::string config_path = kDefaultConfigPath;
  bool check_only = false;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::cout << kUsage;
      return 0;
    }
    if (arg == "--version") {
      std::cout << "chuted " << kVersion << " (" << kRevision << ")\n";
      return 0;
    }
    if (arg == "--check-config") {
      check_only = true;
    } else if (arg == "--config" && i + 1 < argc) {
      config_path = argv[++i];
    } else if (absl::StartsWith(arg, "--config=")) {
      config_path = arg.substr(9);
    } else if (arg == "--log-level" && i + 1 < argc) {
      std::string level = argv[++i];
      if (level == "error") {
        SetLogLevel(LogLevel::kError);
      } else if (level == "warning") {
        SetLogLevel(LogLevel::kWarning);
      } else if (level == "info") {
        SetLogLevel(LogLevel::kInfo);
      } else if (level == "debug") {
        SetLogLevel(LogLevel::kDebug);
      } else {
        std::cerr << "chuted: unknown log level '" << level << "'\n";
        return 1;
      }
    } else {
      std::cerr << "chuted: unknown argument '" << arg << "'\nRun 'chuted --help' for usage.\n";
      return 1;
    }
  }
  absl::StatusOr<Config> config = LoadConfig(config_path);
  if (!config.ok()) {
    std::cerr << "chuted: " << config.status().message() << "\n";
    return 2;
  }
  SetLogJson(config->log.json);
  if (check_only) {
    // Everything Start() would refuse, short of binding the ports.
    std::string routes;
    absl::Status status = server::CheckReferences(*config, &routes);
    if (!status.ok()) {
      std::cerr << "chuted: " << config_path << ": " << status.message() << "\n";
      return 2;
    }
    std::cout << config_path << ": OK\n"
              << "spool.dir = " << config->spool.dir << "\n"
              << "delivery.maildir_root = " << config->delivery.maildir_root << "\n"
              << "directory.database = " << config->directory.database << "\n"
              << routes;
    return 0;
  }

  RaiseFileLimit();
  // Freed memory goes back to the system when a thread goes quiet (base/memory.h). Forced: a
  // normal collect frees empty pages into their segments but leaves them resident while the
  // segment holds live objects (400 TLS sessions quiet after a burst kept 70 KB each resident;
  // forced, 11 KB). It walks the heap's pages like a normal one, about 0.1 ms a second.
#ifndef CHUTE_NO_MIMALLOC
  SetMemoryReleaser(+[] { mi_collect(true); });
#endif

  // Every thread inherits this mask; the main thread takes the signals synchronously.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

#ifndef CHUTE_NO_MIMALLOC
  LOG_INFO("chuted starting (mimalloc %d)", mi_version());
#else
  LOG_INFO("chuted starting (no mimalloc: a sanitizer build)");
#endif
  server::Server server(std::move(*config));
  absl::Status status = server.Start();
  if (!status.ok()) {
    LOG_ERROR("chuted: %s", status.message());
    return 2;
  }
  ServiceNotifier notifier(&server);
  notifier.Ready();
  int exit_code = 0;
  absl::Time next_poll = absl::Now();
  while (true) {
    // Wake for the next signal, the next directory poll, or what the notifier has due.
    absl::Duration wait =
        std::max(std::min(next_poll, notifier.NextDue()) - absl::Now(), absl::ZeroDuration());
    timespec timeout = absl::ToTimespec(wait);
    int signal_number = sigtimedwait(&signals, nullptr, &timeout);
    if (server.Failed()) {
      LOG_ERROR("chuted: a shard failed; stopping");
      exit_code = kExitShardFailed;
      break;
    }
    if (signal_number == SIGTERM || signal_number == SIGINT) {
      LOG_INFO("chuted: %s: stopping", strsignal(signal_number));
      break;
    }
    absl::Time now = absl::Now();
    notifier.Tick(now);
    if (signal_number == SIGHUP) {
      notifier.Reloading();
      Reload(server, config_path);
      notifier.Reloaded();
    } else if (now >= next_poll) {
      PollDirectory(server);
    }
    if (now >= next_poll) {
      next_poll = now + absl::Seconds(kDirectoryPollSeconds);
    }
  }
  notifier.Stopping();
  server.Stop();
  LOG_INFO("chuted: stopped");
  return exit_code;
}

}  // namespace
}  // namespace chute

int main(int argc, char** argv) { return chute::Main(argc, argv); }
