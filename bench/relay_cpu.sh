#!/usr/bin/env bash
# relay_cpu.sh [MESSAGES]: the CPU a relay spends per 1,000 relayed messages, against the CPU
# smtp-sink spends receiving the same messages, in one run on this machine (read the ratios:
# the machine is shared). MESSAGES (default 5000) messages of 10 KB from 20 smtp-source
# sessions over loopback:
#
#   smtp-source -> chuted (trusted listener, SMTP backend) -> smtp-sink
#   smtp-source -> a private Postfix instance -> smtp-sink
#
# CPU is read from /proc (utime + stime of every thread, and of the process's reaped and
# live children: Postfix's smtpd, qmgr, smtp... processes), before the first message and
# once the relay's queue is empty. Prints a Markdown table. CHUTE_BENCH_BIN=DIR runs another
# build's chuted (two commits compared). Loopback only; bounded in count and time; everything
# it starts it stops.
set -euo pipefail
cd "$(dirname "$0")/.."
messages="${1:-5000}"
sessions=20
size=10240
time_limit_s=300
bin="${CHUTE_BENCH_BIN:-$PWD/build/bin}"
source bench/lib.sh
require_built chuted chutectl

# cpu_s PID: CPU seconds of PID, its reaped children and its live descendants.
cpu_s() {
  python3 - "$1" <<'PY'
import os, sys
root = int(sys.argv[1])
tick = os.sysconf("SC_CLK_TCK")
procs = {}
for name in os.listdir("/proc"):
    if name.isdigit():
        try:
            with open(f"/proc/{name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # after the comm: state ppid ... utime(12) stime(13) cutime(14) cstime(15)
        procs[int(name)] = (int(fields[1]), [int(x) for x in fields[11:15]])
def descendants(pid):
    for child, (ppid, _) in procs.items():
        if ppid == pid:
            yield child
            yield from descendants(child)
total = sum(procs[root][1]) if root in procs else 0
total += sum(sum(procs[c][1][:2]) for c in descendants(root))
print(total / tick)
PY
}

source_cmd() { echo "smtp-source -d -s $sessions -m $messages -l $size -f app@example.test -t bench@example.test 127.0.0.1:$1"; }
run_source() { timeout "$time_limit_s" /usr/sbin/$(source_cmd "$1") >/dev/null; }
per_k() { python3 -c "print(f'{($2 - $1) * 1000 / $messages:.3f}')"; }
rows=()

sink=$(free_port)
start_sink "$sink"
sink_pid=${pids[-1]}

# measure NAME RELAY_PID PORT WAIT...: smtp-source to PORT, then WAIT (until the relay's queue
# is empty); one row of the table from the CPU the relay and the sink spent meanwhile.
measure() {
  local name=$1 relay=$2 to=$3
  shift 3
  local r0 s0 t0 r1 s1 t1 relay_k sink_k
  r0=$(cpu_s "$relay"); s0=$(cpu_s "$sink_pid"); t0=$(now)
  run_source "$to"
  "$@"
  r1=$(cpu_s "$relay"); s1=$(cpu_s "$sink_pid"); t1=$(now)
  relay_k=$(per_k "$r0" "$r1"); sink_k=$(per_k "$s0" "$s1")
  rows+=("| $name | $(python3 -c "print(round($messages / ($t1 - $t0)))") | $relay_k | $sink_k | $(ratio "$relay_k" "$sink_k") |")
}

start_chute relay "$(printf 'backend = "smtp"\ntarget = "127.0.0.1:%s"\ntls = "off"\nconnections_max = 16' "$sink")"
measure "chuted -> smtp-sink" "$pid" "$port" wait_metric_zero "$admin"
stop_chute

if start_postfix "$sink"; then
  master=$(head -1 "$postfix_queue/pid/master.pid" | tr -d ' ')
  measure "Postfix -> smtp-sink" "$master" "$postfix_port" wait_postfix_empty "$postfix_queue"
  stop_postfix
fi

echo "$messages messages of $size bytes from $sessions smtp-source sessions, loopback, $(nproc) cores"
echo
echo "| relay | messages/s end to end | relay CPU s per 1,000 | smtp-sink CPU s per 1,000 | relay / sink |"
echo "|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
