#!/usr/bin/env bash
# micro.sh [BENCHMARK ARGS...]: builds and runs every Google Benchmark program under bench/
# (SMTP parser and session, the connection gate, the message trace store), one after the
# other, each with the arguments given (e.g. --benchmark_filter=Parse, --benchmark_format=json).
# CPU-bound and in-process: no network, no servers. Prints; asserts nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install-deps.sh
cmake --preset release >/dev/null
programs=(smtp_bench gate_bench trace_bench)
cmake --build --preset release --target "${programs[@]}"
for program in "${programs[@]}"; do
  echo "== $program"
  "build/bin/$program" "$@"
done
