#!/usr/bin/env bash
# fuzz.sh [SECONDS] [TARGET]: builds the libFuzzer targets with clang, ASan and UBSan (preset
# "fuzz", in build-fuzz/) and runs TARGET (default session_fuzz) for SECONDS (default 600),
# starting from the checked-in seed corpus. A finding leaves crash-* in build-fuzz/findings and
# exits non-zero. Prints the number of executions.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-600}"
target="${2:-session_fuzz}"

cmake --preset fuzz >/dev/null
cmake --build --preset fuzz --target "$target" >/dev/null
corpus_seed="tests/fuzz/corpus/${target%_fuzz}"
work="build-fuzz/corpus/$target"
findings="build-fuzz/findings"
mkdir -p "$work" "$findings"
log="build-fuzz/$target.log"
status=0
"build-fuzz/bin/$target" -max_total_time="$seconds" -max_len=4096 -timeout=10 \
  -artifact_prefix="$findings/" -print_final_stats=1 "$work" "$corpus_seed" >"$log" 2>&1 ||
  status=$?
grep -E "^stat::number_of_executed_units|^stat::peak_rss_mb" "$log" || true
if [ "$status" -ne 0 ]; then
  tail -40 "$log"
  echo "fuzz.sh: $target found a problem (see $log and $findings/)" >&2
fi
exit "$status"
