// chute-load: the bundled SMTP load generator (chute-load --help; docs/man/chute-load.1.scd).
//
// main() parses the options, splits the work over --threads Runners (one io_uring each, no
// thread per connection), prints a progress line every second on a terminal, merges the
// threads' Stats and prints the summary. The scenarios differ only in how each Runner opens
// connections and whether sessions send mail or hold (RunnerConfig); idle and caps add a
// measurement at the moment every session is established (Runner's on_quiescent).
//
// Exit status: 0 the run completed and the target answered as expected; 1 usage; 2 the target
// failed (refused or dropped connections, unexpected replies: all counted in the summary), or
// a cap was not exact, or the run could not be carried out.

#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "base/histogram.h"
#include "tools/chute-load/options.h"
#include "tools/chute-load/report.h"
#include "tools/chute-load/runner.h"

namespace chute::load {
namespace {

constexpr int kExitOk = 0;
constexpr int kExitUsage = 1;
constexpr int kExitFailed = 2;
// kFarFutureUs: the end time of a run bounded by its message count only.
constexpr int64_t kFarFutureUs = int64_t{1} << 62;
// kSettleMs: idle and caps wait this long after the last session is answered before they
// measure (the server frees and allocates per connection on its own threads).
constexpr int kSettleMs = 200;
// kJoinPollMs: how often the main thread looks whether the runners are done.
constexpr int kJoinPollMs = 20;
// kCapSourcesMax: loopback source addresses the tenant-cap phase may spread over.
constexpr int kCapSourcesMax = 250;

// g_run_errors: errors over all threads, for --max-errors (the one counter threads share).
std::atomic<uint64_t> g_run_errors{0};

SessionConfig MakeSessionConfig(const Options& o) {
  SessionConfig s;
  s.tls = o.tls;
  s.auth = o.auth;
  s.user = o.user;
  s.secret = o.secret;
  s.from = o.from;
  s.to = o.to;
  s.rcpts = o.rcpts;
  s.ehlo = o.ehlo;
  s.bdat = o.bdat;
  s.pipelining = o.pipelining;
  s.messages_max = o.messages_per_connection;
  s.date = absl::FormatTime("%a, %d %b %Y %H:%M:%S +0000", absl::Now(), absl::UTCTimeZone());
  s.run_id = absl::StrFormat("%x.%x", absl::ToUnixMicros(absl::Now()), getpid());
  return s;
}

RunnerConfig BaseRunnerConfig(const Options& o, const SessionConfig& session) {
  RunnerConfig c;
  c.target = o.target;
  c.session = session;
  c.tls = o.tls;
  c.timeout_us = static_cast<int64_t>(o.timeout_s * 1e6);
  c.sizes = o.sizes;
  c.errors_max = o.errors_max;
  c.run_errors = &g_run_errors;
  return c;
}

uint64_t Share(uint64_t total, int parts, int index) {
  return total / static_cast<uint64_t>(parts) +
         (static_cast<uint64_t>(index) < total % static_cast<uint64_t>(parts) ? 1 : 0);
}

// RunThreads: runs `runners` on their own threads with a progress line on a terminal;
// merges their Stats into `total`. False when a runner could not run (its error on stderr).
bool RunThreads(const Options& o, std::vector<std::unique_ptr<Runner>>& runners, Stats* total,
                double* elapsed_s) {
  int64_t start_us = MonotonicMicros();
  std::vector<absl::Status> results(runners.size());
  std::vector<std::thread> threads;
  std::atomic<size_t> finished{0};
  std::atomic<int64_t> last_finish_us{start_us};
  for (size_t i = 0; i < runners.size(); ++i) {
    threads.emplace_back([&, i] {
      results[i] = runners[i]->Run();
      int64_t end_us = MonotonicMicros();
      int64_t seen = last_finish_us.load();
      while (seen < end_us && !last_finish_us.compare_exchange_weak(seen, end_us)) {
      }
      finished.fetch_add(1);
    });
  }
  bool progress = o.progress && !o.json && isatty(STDERR_FILENO);
  uint64_t last_messages = 0;
  int64_t last_print_us = start_us;
  while (finished.load() < runners.size()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(kJoinPollMs));
    int64_t now_us = MonotonicMicros();
    if (!progress || now_us - last_print_us < 1'000'000) {
      continue;
    }
    last_print_us = now_us;
    uint64_t messages = 0, in_flight = 0, errors = 0;
    for (auto& r : runners) {
      messages += r->stats().messages.load(std::memory_order_relaxed);
      in_flight += r->stats().in_flight.load(std::memory_order_relaxed);
      errors += r->stats().error_count.load(std::memory_order_relaxed);
    }
    absl::FPrintF(stderr, "\r[%6.1fs] %d messages, %d/s, %d in flight, %d errors   ",
                  static_cast<double>(now_us - start_us) / 1e6, messages, messages - last_messages,
                  in_flight, errors);
    last_messages = messages;
  }
  for (auto& t : threads) {
    t.join();
  }
  if (progress) {
    absl::FPrintF(stderr, "\n");
  }
  *elapsed_s = static_cast<double>(last_finish_us.load() - start_us) / 1e6;
  bool ok = true;
  for (size_t i = 0; i < runners.size(); ++i) {
    total->Merge(runners[i]->stats());
    if (!results[i].ok()) {
      absl::FPrintF(stderr, "chute-load: thread %d: %s\n", i, results[i].ToString());
      ok = false;
    }
  }
  return ok;
}

// Traffic: persistent, reconnect and burst.
bool RunTraffic(const Options& o, Stats* total, double* elapsed_s) {
  SessionConfig session = MakeSessionConfig(o);
  uint64_t messages = o.messages;
  if (o.scenario == Scenario::kReconnect) {
    session.messages_max = 1;
  }
  if (o.scenario == Scenario::kBurst) {
    session.messages_max = o.messages_per_connection != 0 ? o.messages_per_connection : 1;
    if (messages == 0) {
      messages = static_cast<uint64_t>(o.connections) * session.messages_max;
    }
  }
  int64_t start_us = MonotonicMicros();
  int64_t end_us =
      o.duration_s > 0 ? start_us + static_cast<int64_t>(o.duration_s * 1e6) : kFarFutureUs;
  std::vector<std::unique_ptr<Runner>> runners;
  for (int i = 0; i < o.threads; ++i) {
    RunnerConfig c = BaseRunnerConfig(o, session);
    c.connections = static_cast<int>(Share(static_cast<uint64_t>(o.connections), o.threads, i));
    c.reopen = o.scenario != Scenario::kBurst;
    c.on_demand = o.scenario == Scenario::kReconnect;
    c.connections_total = o.scenario == Scenario::kBurst ? static_cast<uint64_t>(c.connections) : 0;
    c.seed = static_cast<uint64_t>(i) + 1;
    uint64_t share = messages != 0 ? Share(messages, o.threads, i) : 0;
    if (messages != 0 && share == 0) {
      continue;
    }
    Schedule schedule(start_us, end_us, share, o.rate_per_s / o.threads, static_cast<uint64_t>(i),
                      static_cast<uint64_t>(o.threads));
    runners.push_back(std::make_unique<Runner>(std::move(c), schedule));
  }
  return RunThreads(o, runners, total, elapsed_s);
}

// ReadProcKb: the "<key>: N kB" line of /proc/PID/<file>, in bytes; 0 when unreadable.
uint64_t ReadProcKb(int pid, const char* file, absl::string_view key) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/", file));
  std::string line;
  while (std::getline(in, line)) {
    if (absl::StartsWith(line, key) && line.size() > key.size() && line[key.size()] == ':') {
      std::string value = line.substr(key.size() + 1);  // the views below point into it
      std::vector<absl::string_view> parts =
          absl::StrSplit(value, absl::ByAnyChar(" \t"), absl::SkipEmpty());
      uint64_t kb = 0;
      if (!parts.empty() && absl::SimpleAtoi(parts[0], &kb)) {
        return kb * 1024;
      }
    }
  }
  return 0;
}

// HoldRunner: one runner whose sessions all stop once ready; `at_quiescent(runner)` runs when
// every session is established (or refused) and before they are ended.
std::unique_ptr<Runner> HoldRunner(RunnerConfig c, std::function<void(Runner&)> at_quiescent) {
  auto slot = std::make_shared<Runner*>(nullptr);
  c.session.hold = true;
  c.connections_total = static_cast<uint64_t>(c.connections);
  c.on_quiescent = [slot, at_quiescent] { at_quiescent(**slot); };
  auto runner =
      std::make_unique<Runner>(std::move(c), Schedule(MonotonicMicros(), kFarFutureUs, 0, 0, 0, 1));
  *slot = runner.get();
  return runner;
}

bool RunIdle(const Options& o, Stats* total, double* elapsed_s, MemoryReport* memory) {
  memory->server_pid = o.server_pid;
  if (o.server_pid != 0) {
    memory->rss_before_bytes = ReadProcKb(o.server_pid, "status", "VmRSS");
    memory->pss_before_bytes = ReadProcKb(o.server_pid, "smaps_rollup", "Pss");
  }
  RunnerConfig c = BaseRunnerConfig(o, MakeSessionConfig(o));
  c.connections = o.connections;
  std::vector<std::unique_ptr<Runner>> runners;
  // Measured once every session is established and idle, after a moment for the server to
  // settle its allocations for them; then held for --hold seconds.
  runners.push_back(HoldRunner(std::move(c), [memory, &o](Runner& runner) {
    std::this_thread::sleep_for(std::chrono::milliseconds(kSettleMs));
    memory->connections = runner.stats().sessions_ready;
    if (o.server_pid != 0) {
      memory->rss_after_bytes = ReadProcKb(o.server_pid, "status", "VmRSS");
      memory->pss_after_bytes = ReadProcKb(o.server_pid, "smaps_rollup", "Pss");
    }
    std::this_thread::sleep_for(std::chrono::microseconds(static_cast<int64_t>(o.hold_s * 1e6)));
  }));
  return RunThreads(o, runners, total, elapsed_s);
}

// CapPhase: opens cap + extra sessions at once (holding the accepted ones until all have an
// answer) and counts accepted ones (`accepted` of the phase's Stats) against refusals, the
// error keys that start with `refusal_phase`.
bool CapPhase(const Options& o, RunnerConfig c, int cap, const std::string& refusal_phase,
              bool count_auths, Stats* total, double* elapsed_s, CapReport* report) {
  report->cap = cap;
  c.errors_max = 0;  // refusals are what this scenario is after
  c.run_errors = nullptr;
  report->attempted = static_cast<uint64_t>(c.connections);
  std::vector<std::unique_ptr<Runner>> runners;
  runners.push_back(HoldRunner(std::move(c), [](Runner&) {
    std::this_thread::sleep_for(std::chrono::milliseconds(kSettleMs));
  }));
  Stats phase;
  double phase_s = 0;
  bool ok = RunThreads(o, runners, &phase, &phase_s);
  *elapsed_s += phase_s;
  report->accepted = count_auths ? phase.auths : phase.banners;
  uint64_t refused = 0;
  bool others = false;
  for (const auto& [key, count] : phase.errors) {
    if (absl::StartsWith(key, refusal_phase + " ")) {
      report->refused[key.substr(refusal_phase.size() + 1)] += count;
      refused += count;
    } else {
      others = true;
    }
  }
  report->exact = !others && report->accepted == static_cast<uint64_t>(cap) &&
                  report->accepted + refused == report->attempted;
  total->Merge(phase);
  return ok;
}

bool RunCaps(const Options& o, Stats* total, double* elapsed_s, CapReport* ip, CapReport* tenant) {
  int extra = o.connections;
  // Phase 1, the per-IP cap: unauthenticated sessions from one address.
  RunnerConfig c = BaseRunnerConfig(o, MakeSessionConfig(o));
  c.session.auth = AuthMech::kNone;
  c.connections = o.ip_cap + extra;
  bool ok = CapPhase(o, std::move(c), o.ip_cap, "banner", false, total, elapsed_s, ip);
  if (o.auth == AuthMech::kNone) {
    return ok;  // no credentials: only the per-IP cap can be tried
  }
  // Phase 2, the per-tenant cap: authenticated sessions spread over as many loopback source
  // addresses (127.0.0.2 and up) as keep each below the per-IP cap.
  RunnerConfig t = BaseRunnerConfig(o, MakeSessionConfig(o));
  t.connections = o.tenant_cap + extra;
  bool v4_loopback = o.target.ip[10] == 0xff && o.target.ip[12] == 127;
  if (v4_loopback) {
    int per = std::max(1, o.ip_cap - 1);
    for (int k = 0; k * per < t.connections && k < kCapSourcesMax; ++k) {
      IpBytes source = o.target.ip;
      source[13] = 0;
      source[14] = static_cast<uint8_t>((k + 2) >> 8);
      source[15] = static_cast<uint8_t>(k + 2);
      t.sources.push_back(source);
    }
    t.per_source_max = per;
  }
  return CapPhase(o, std::move(t), o.tenant_cap, "auth", true, total, elapsed_s, tenant) && ok;
}

int Main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  absl::StatusOr<Options> options = ParseOptions(args);
  if (!options.ok()) {
    if (absl::IsNotFound(options.status())) {
      std::fputs(Usage(), stdout);
      return kExitOk;
    }
    absl::FPrintF(stderr, "chute-load: %s\n", options.status().message());
    return kExitUsage;
  }
  const Options& o = *options;
  // One descriptor per connection: take the whole hard limit (the soft default, 1024, is
  // below what idle and burst runs open). A socket() that still fails counts as an error.
  rlimit files{};
  if (getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur < files.rlim_max) {
    files.rlim_cur = files.rlim_max;
    setrlimit(RLIMIT_NOFILE, &files);
  }
  Stats total;
  RunReport report;
  report.options = &o;
  report.stats = &total;
  bool ran = true;
  switch (o.scenario) {
    case Scenario::kPersistent:
    case Scenario::kReconnect:
    case Scenario::kBurst:
      ran = RunTraffic(o, &total, &report.elapsed_s);
      break;
    case Scenario::kIdle:
      report.memory.emplace();
      ran = RunIdle(o, &total, &report.elapsed_s, &*report.memory);
      break;
    case Scenario::kCaps:
      report.ip_cap.emplace();
      report.tenant_cap.emplace();
      ran = RunCaps(o, &total, &report.elapsed_s, &*report.ip_cap, &*report.tenant_cap);
      if (report.tenant_cap->cap == 0) {
        report.tenant_cap.reset();
      }
      break;
  }
  report.completed = ran && (o.scenario == Scenario::kCaps || g_run_errors.load() < o.errors_max);
  bool failed = !ran;
  if (o.scenario == Scenario::kCaps) {
    failed |= !report.ip_cap->exact || (report.tenant_cap && !report.tenant_cap->exact);
  } else {
    failed |= total.error_count.load() != 0 || total.connections_established == 0;
  }
  report.exit_code = failed ? kExitFailed : kExitOk;
  std::string text = o.json ? FormatJson(report) : FormatText(report);
  std::fwrite(text.data(), 1, text.size(), stdout);
  return report.exit_code;
}

}  // namespace
}  // namespace chute::load

int main(int argc, char** argv) { return chute::load::Main(argc, argv); }
