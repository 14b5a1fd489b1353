// trace_bench: how fast the message trace's store takes events, in the batches its writer
// thread commits (one transaction each): a received event and a delivered result per message,
// as a Maildir delivery produces them. Compare with chuted's acceptance rate: the store must
// take far more messages per second than the server accepts.

#include <benchmark/benchmark.h>
#include <stdlib.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "trace/trace.h"

namespace chute::trace {
namespace {

void BM_AppendMessages(benchmark::State& state) {
  char pattern[] = "/tmp/chute-trace-bench-XXXXXX";
  if (mkdtemp(pattern) == nullptr) {
    state.SkipWithError("mkdtemp");
    return;
  }
  std::string dir = pattern;
  auto store = Store::Open(dir + "/trace.db", true);
  if (!store.ok()) {
    state.SkipWithError(std::string(store.status().message()).c_str());
    return;
  }
  const int64_t batch_messages = state.range(0);
  int64_t counter = 0;
  for (auto _ : state) {
    std::vector<Event> events;
    events.reserve(2 * batch_messages);
    for (int64_t i = 0; i < batch_messages; ++i, ++counter) {
      std::string id = absl::StrCat("Q", counter);
      Event& received = events.emplace_back();
      received.kind = Event::Kind::kReceived;
      received.time_us = 1'700'000'000'000'000 + counter;
      received.queue_id = id;
      received.tenant = "example.test";
      received.account = "app@example.test";
      received.sender = "app@example.test";
      received.message_id = absl::StrCat("<", id, "@bench.example.test>");
      received.client = "127.0.0.1";
      received.recipients = {absl::StrCat("user", counter % 1000, "@example.test")};
      received.size_bytes = 10240;
      Event& delivered = events.emplace_back();
      delivered.kind = Event::Kind::kAttempt;
      delivered.time_us = received.time_us + 1000;
      delivered.queue_id = id;
      delivered.recipient = received.recipients[0];
      delivered.status = Status::kDelivered;
      delivered.reply = "250 2.0.0 delivered to maildir";
      delivered.target = "maildir:/var/lib/chute/mail";
      delivered.attempt = 1;
    }
    absl::Status status = (*store)->Append(events);
    if (!status.ok()) {
      state.SkipWithError(std::string(status.message()).c_str());
      break;
    }
  }
  state.SetItemsProcessed(state.iterations() * batch_messages);
  state.counters["messages/s"] = benchmark::Counter(
      static_cast<double>(state.iterations() * batch_messages), benchmark::Counter::kIsRate);
  store->reset();
  std::string command = "rm -rf " + dir;
  (void)system(command.c_str());
}
// Real time: the disk (WAL appends, checkpoints) is part of the cost.
BENCHMARK(BM_AppendMessages)
    ->Arg(100)
    ->Arg(1000)
    ->Arg(8192)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace chute::trace
