#!/usr/bin/env bash
# verify_bench.sh [RCPTS]: what recipient verification (verify_recipients) costs at RCPT, in
# one run on this machine (read the ratios: the machine is shared). Two chuteds with the SMTP
# backend to smtp-sink, one verifying and one not; one client session each (a Python client,
# no pipelining: every RCPT waits for its reply):
#
#   warm:  RCPTS transactions of MAIL, one RCPT to an address verified already, RSET: the RCPT
#          round trip, verification off vs on (answered from the cache)
#   burst: RCPTS RCPTs to addresses never seen (each one a probe over the route's one
#          connection to smtp-sink): the RCPT round trip and the probes /metrics counted
#
# Prints a Markdown table. CHUTE_BENCH_BIN=DIR runs another build. Loopback only; bounded in
# count and time; everything it starts it stops.
set -euo pipefail
cd "$(dirname "$0")/.."
rcpts="${1:-2000}"
time_limit_s=300
bin="${CHUTE_BENCH_BIN:-$PWD/build/bin}"
source bench/lib.sh
require_built chuted chutectl

sink=$(free_port)
start_sink "$sink"

# client PORT MODE COUNT: p50 p99 (ms) of the RCPT round trip, and the seconds it all took.
client() {
  timeout "$time_limit_s" python3 - "$@" <<'PY'
import socket, sys, time
port, mode, count = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
s = socket.create_connection(("127.0.0.1", port))
f = s.makefile("rb")
def reply():
    while True:
        line = f.readline()
        if line[3:4] != b"-":
            return line
def cmd(text):
    s.sendall(text.encode() + b"\r\n")
    return reply()
reply()
cmd("EHLO bench.example.test")
times = []
started = time.monotonic()
if mode == "warm":
    cmd("MAIL FROM:<app@example.test>")
    assert cmd("RCPT TO:<known@example.test>").startswith(b"250")  # verified once: cached
    cmd("RSET")
    for i in range(count):
        cmd("MAIL FROM:<app@example.test>")
        t = time.perf_counter()
        line = cmd("RCPT TO:<known@example.test>")
        times.append(time.perf_counter() - t)
        assert line.startswith(b"250"), line
        cmd("RSET")
else:
    for i in range(count):
        if i % 50 == 0:
            cmd("RSET")
            cmd("MAIL FROM:<app@example.test>")
        t = time.perf_counter()
        line = cmd(f"RCPT TO:<new{i}@example.test>")
        times.append(time.perf_counter() - t)
        assert line.startswith(b"250"), line
elapsed = time.monotonic() - started
cmd("QUIT")
times.sort()
print(f"{times[len(times) // 2] * 1e3:.3f} {times[len(times) * 99 // 100] * 1e3:.3f} {elapsed:.2f}")
PY
}

declare -A result
for verify in false true; do
  start_chute "verify-$verify" "$(printf 'backend = "smtp"\ntarget = "127.0.0.1:%s"\ntls = "off"\nverify_recipients = %s' "$sink" "$verify")"
  result[$verify,warm]=$(client "$port" warm "$rcpts")
  result[$verify,burst]=$(client "$port" burst "$rcpts")
  if [ "$verify" = true ]; then
    probes=$(curl -s "http://127.0.0.1:$admin/metrics" | awk '/^chute_recipient_verifications_total\{route="default",result="exists"\}/ {print $2}')
  fi
  stop_chute
done

row() {  # row NAME KEY
  read -r off50 off99 offs <<<"${result[false,$2]}"
  read -r on50 on99 ons <<<"${result[true,$2]}"
  echo "| $1 | $off50 / $off99 | $on50 / $on99 | $(ratio "$on50" "$off50") | ${offs} s / ${ons} s |"
}
echo "$rcpts RCPTs per run, one session, no pipelining, loopback, $(nproc) cores; SMTP backend to smtp-sink"
echo
echo "| run | RCPT p50 / p99 ms, verification off | on | p50 on / off | whole run off / on |"
echo "|---|---|---|---|---|"
row "warm (one address, cached)" warm
row "burst (every address new: a probe each)" burst
echo
echo "probes made by the verifying chuted (exists): ${probes:-?} for $((rcpts + 1)) distinct addresses"
