#!/usr/bin/env bash
# latency.sh [RATE] [SECONDS]: end of data -> 250 at a steady, light rate, beside the floor
# that no durable relay can beat on this disk: one fdatasync of a 10 KB append, measured in the
# same run in the same filesystem as the spool.
#
#   floor     2,000 x (append 10 KB to a file, fdatasync) back to back, then 1,500 of them one
#             every 1/RATE s (an idle virtual disk syncs slower than a busy one: that is the
#             floor at this rate), p50 and p99 (python3, os.fdatasync)
#   chuted    chute-load open loop at RATE messages/s (default 200) for SECONDS (default 20),
#             8 connections, 10 KB messages, the trusted listener, SMTP delivery to smtp-sink;
#             p50 and p99 from the end of data to the 250 as the client sees it, and chuted's own
#             histograms (chute_end_of_data_seconds, chute_spool_commit_seconds) for where
#             the time goes (mean, and the histogram bucket under which 99% fall)
#
# Prints one table and writes it as build/bench/latency.md. CHUTE_BENCH_COMMIT_DELAY_US sets
# [spool] group_commit_delay_us (default 500). Loopback only; bounded in time; everything it
# starts it stops.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--help" ] || [ "${1:-}" = "-h" ]; then
  sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
  exit 0
fi
rate="${1:-200}"
seconds="${2:-20}"
time_limit_s=$((seconds + 120))
bin="${CHUTE_BENCH_BIN:-$PWD/build/bin}"
out="$PWD/build/bench"
mkdir -p "$out"
# shellcheck source=bench/lib.sh
source bench/lib.sh
require_built chuted chutectl chute-load

sink_port=$(free_port)
start_sink "$sink_port"
start_chute latency "backend = \"smtp\"
target = \"127.0.0.1:$sink_port\""
dir="$work/latency"

# The floor, in the spool's filesystem, before the load (the machine as quiet as it gets).
floor=$(python3 - "$dir" "$rate" <<'EOF'
import os, sys, time
path = os.path.join(sys.argv[1], "fdatasync-floor")
pause_s = 1.0 / float(sys.argv[2])
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
block = b"x" * 10240
out = []
for pace, n in ((0.0, 2000), (pause_s, 1500)):
    samples = []
    for _ in range(n):
        t = time.perf_counter_ns()
        os.write(fd, block)
        os.fdatasync(fd)
        samples.append((time.perf_counter_ns() - t) / 1e6)
        if pace:
            time.sleep(pace)
    samples.sort()
    out += [f"{samples[len(samples) // 2]:.3f}", f"{samples[int(len(samples) * 0.99)]:.3f}"]
os.close(fd)
os.unlink(path)
print(" ".join(out))
EOF
)
read -r floor_p50 floor_p99 paced_p50 paced_p99 <<<"$floor"

json=$("$bin/chute-load" --target "127.0.0.1:$port" --connections 8 --size 10k \
  --rate "$rate" --duration "$seconds" --threads 1 --no-progress --json)
read -r p50 p99 sent <<<"$(python3 - "$json" <<'EOF2'
import json, sys
s = json.loads(sys.argv[1])
lat = s["latency_us"]["end_of_data_to_250"]
print("%.3f %.3f %d" % (lat["p50"] / 1000, lat["p99"] / 1000, s["messages"]))
EOF2
)"

# chuted's own view: its histograms of end of data -> reply and of the spool commit (mean, and
# the bucket bound under which 99% fall).
metrics=$(curl -s "http://127.0.0.1:$admin/metrics")
server_view() {
  python3 -c '
import re, sys
text, name = sys.stdin.read(), sys.argv[1]
buckets = {}
for le, v in re.findall(rf"^{name}_bucket{{[^}}]*le=\"([^\"]+)\"[^}}]*}} (\S+)$", text, re.M):
    buckets[le] = buckets.get(le, 0.0) + float(v)
tot = sum(float(v) for v in re.findall(rf"^{name}_sum(?:{{[^}}]*}})? (\S+)$", text, re.M))
cnt = sum(float(v) for v in re.findall(rf"^{name}_count(?:{{[^}}]*}})? (\S+)$", text, re.M))
if not cnt:
    print("n/a n/a"); sys.exit()
bounds = sorted((float("inf") if le == "+Inf" else float(le), c) for le, c in buckets.items())
p99 = next((b for b, c in bounds if c >= 0.99 * cnt), float("inf"))
print(f"{tot / cnt * 1000:.3f} <{p99 * 1000:g}")
' "$1" <<<"$metrics"
}
read -r eod_mean eod_p99 <<<"$(server_view chute_end_of_data_to_reply_seconds)"
read -r commit_mean commit_p99 <<<"$(server_view chute_spool_commit_seconds)"
stop_chute

{
  echo "| what | p50 ms | p99 ms | notes |"
  echo "|---|---|---|---|"
  echo "| fdatasync of a 10 KB append, back to back | $floor_p50 | $floor_p99 | 2,000 samples, spool filesystem |"
  echo "| the same, one every 1/$rate s (the floor at this rate) | $paced_p50 | $paced_p99 | 1,500 samples |"
  echo "| chuted end of data -> 250 at $rate/s | $p50 | $p99 | $sent messages, 8 connections, 10 KB, trusted, SMTP to smtp-sink |"
  echo "| p50/p99 above the back-to-back floor | $(python3 -c "print(f'{$p50 - $floor_p50:.3f}')") | $(python3 -c "print(f'{$p99 - $floor_p99:.3f}')") | |"
  echo "| p50/p99 above the floor at this rate | $(python3 -c "print(f'{$p50 - $paced_p50:.3f}')") | $(python3 -c "print(f'{$p99 - $paced_p99:.3f}')") | |"
  echo "| chuted's own end of data -> 250 (mean; p99 bucket) | $eod_mean | $eod_p99 | /metrics |"
  echo "| chuted's spool commit (mean; p99 bucket) | $commit_mean | $commit_p99 | /metrics |"
  echo
  echo "group_commit_delay_us = ${CHUTE_BENCH_COMMIT_DELAY_US:-500}; binaries: $bin"
} | tee "$out/latency.md"
