// gate_bench: ConnectionGate acquire+release pairs per second, uncontended (one thread, one
// address) and contended (every thread on the same address, run with --benchmark_filter and
// the thread counts below). A relaxed atomic increment+decrement on one word is printed as the
// reference of the same run. It measures; it asserts nothing.

#include <benchmark/benchmark.h>

#include <atomic>

#include "policy/connection_gate.h"

namespace chute::policy {
namespace {

ConnectionGate& Gate() {
  static ConnectionGate* gate = [] {
    ConnectionGate::Limits limits;
    limits.per_ip = 65535;
    return new ConnectionGate(limits);
  }();
  return *gate;
}

void BM_AtomicReference(benchmark::State& state) {
  static std::atomic<uint64_t> word{0};
  for (auto _ : state) {
    word.fetch_add(1, std::memory_order_acq_rel);
    word.fetch_sub(1, std::memory_order_acq_rel);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_AtomicReference)->Threads(1)->Threads(2);

void BM_AcquireRelease(benchmark::State& state) {
  IpBytes ip = *ParseIp("192.0.2.1");
  ConnectionGate& gate = Gate();
  for (auto _ : state) {
    ConnectionGate::Handle handle;
    benchmark::DoNotOptimize(gate.AdmitIp(ip, &handle));
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_AcquireRelease)->Threads(1)->Threads(2);

// Each thread its own address: what separate clients cost when both cores admit at once.
void BM_AcquireReleaseDistinctAddresses(benchmark::State& state) {
  IpBytes ip = *ParseIp("198.51.100.0");
  ip[15] = static_cast<uint8_t>(state.thread_index());
  ConnectionGate& gate = Gate();
  for (auto _ : state) {
    ConnectionGate::Handle handle;
    benchmark::DoNotOptimize(gate.AdmitIp(ip, &handle));
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_AcquireReleaseDistinctAddresses)->Threads(1)->Threads(2);

}  // namespace
}  // namespace chute::policy
