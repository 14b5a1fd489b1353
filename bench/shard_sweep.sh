#!/usr/bin/env bash
# shard_sweep.sh [MESSAGES]: where adding shards (and Maildir delivery threads) stops paying,
# on this machine. For shards = 1 .. the core count (and one past it, to show what
# oversubscription costs) and delivery_threads = 1, 2, 4, a private chuted with Maildir
# delivery takes MESSAGES (default 10000) 10 KB messages from chute-load over STARTTLS+AUTH
# (20 persistent connections). Per run: acceptance messages/s and p99 end of data -> 250 (from
# chute-load), end to end messages/s (until the spool is settled, every message in its
# Maildir), and each shard's utilisation: its loop's busy time (chute_shard_busy_seconds_total,
# the time spent handling completions in user space) and its thread's CPU time (user + system,
# from /proc: also the kernel work io_uring does for it while it waits), over the run.
# Then, at shards = the core count and 2 delivery threads, the same for [spool]
# group_commit_delay_us = 0, 200, 500 (the default), 2000: how long a record waits for company
# before its group's fdatasync.
# Prints Markdown tables and writes build/bench/shard_sweep.{md,json,svg}. Loopback only;
# bounded in count and time; everything it starts it stops.
set -euo pipefail
cd "$(dirname "$0")/.."
messages="${1:-10000}"
sessions=20
size=10240
time_limit_s=300
bin="${CHUTE_BENCH_BIN:-$PWD/build/bin}"  # CHUTE_BENCH_BIN: another build's binaries
out="$PWD/build/bench"
mkdir -p "$out"
source bench/lib.sh
require_built chuted chutectl chute-load
printf '%s' "$BENCH_PASSWORD" >"$work/password"
rows="$work/rows.jsonl"
: >"$rows"
cores=$(nproc)

busy() {  # busy ADMIN_PORT: "shard=seconds ..." of chute_shard_busy_seconds_total
  curl -s "127.0.0.1:$1/metrics" |
    awk -F'[{}" ]+' '/^chute_shard_busy_seconds_total\{/ { printf "%s=%s ", $3, $4 }'
}
cpu() {  # cpu PID: "shard=seconds ..." of CPU time (user + system) of each chute-shard-N thread
  python3 - "$1" <<'PY'
import glob, os, sys
tick = os.sysconf("SC_CLK_TCK")
out = []
for task in glob.glob(f"/proc/{sys.argv[1]}/task/*"):
    name = open(f"{task}/comm").read().strip()
    if name.startswith("chute-shard-"):
        fields = open(f"{task}/stat").read().rsplit(")", 1)[1].split()
        out.append(f"{name[len('chute-shard-'):]}={(int(fields[11]) + int(fields[12])) / tick}")
print(" ".join(out))
PY
}

# measure SHARDS THREADS DELAY_US: one run, one row.
measure() {
  local shards=$1 threads=$2 delay=$3
  CHUTE_BENCH_SHARDS=$shards CHUTE_BENCH_DELIVERY_THREADS=$threads \
    CHUTE_BENCH_COMMIT_DELAY_US=$delay start_chute "s${shards}d${threads}c${delay}" 'backend = "maildir"'
  local before after t0 t1 j
  before=$(busy "$admin")
  cpu_before=$(cpu "$pid")
  t0=$(now)
  j=$(timeout "$time_limit_s" "$bin/chute-load" --target "127.0.0.1:$tls_port" --tls starttls \
      --user app@example.test --password-file "$work/password" --connections "$sessions" \
      --messages "$messages" --size "$size" --from app@example.test --to bench@example.test \
      --no-progress --json)
  wait_metric_zero "$admin"
  t1=$(now)
  after=$(busy "$admin")
  cpu_after=$(cpu "$pid")
  python3 - "$shards" "$threads" "$delay" "$messages" "$t0" "$t1" "$before" "$after" "$j" \
    "$cpu_before" "$cpu_after" >>"$rows" <<'PY'
import json, sys
shards, threads, delay, messages = map(int, sys.argv[1:5])
t0, t1 = float(sys.argv[5]), float(sys.argv[6])
parse = lambda s: {k: float(v) for k, v in (p.split("=") for p in s.split())}
before, after = parse(sys.argv[7]), parse(sys.argv[8])
j = json.loads(sys.argv[9])
cpu_before, cpu_after = parse(sys.argv[10]), parse(sys.argv[11])
if j["messages"] != messages or j["error_total"]:
    sys.exit(f"shards={shards}: {j['messages']} of {messages} accepted, errors {j['errors']}")
elapsed = t1 - t0
print(json.dumps({
    "shards": shards, "delivery_threads": threads, "group_commit_delay_us": delay,
    "accept_per_s": j["messages_per_s"],
    "p99_ms": round(j["latency_us"]["end_of_data_to_250"]["p99"] / 1000, 2),
    "end_to_end_per_s": round(messages / elapsed, 1),
    "utilisation": [round((after[s] - before.get(s, 0)) / elapsed, 2) for s in sorted(after)],
    "cpu": [round((cpu_after[s] - cpu_before.get(s, 0)) / elapsed, 2) for s in sorted(cpu_after)],
}))
PY
  stop_chute
}

for shards in $(seq 1 $((cores + 1))); do
  for threads in 1 2 4; do
    measure "$shards" "$threads" 500
  done
done
for delay in 0 200 2000; do
  measure "$cores" 2 "$delay"
done

python3 - "$rows" "$out" "$messages" "$cores" <<'PY'
import json, os, subprocess, sys
rows_path, out, messages, cores = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
all_rows = [json.loads(l) for l in open(rows_path)]
rows = [r for r in all_rows if r["group_commit_delay_us"] == 500]
delays = sorted((r for r in all_rows if r["shards"] == cores and r["delivery_threads"] == 2),
                key=lambda r: r["group_commit_delay_us"])
lines = [f"{messages} messages of 10 KB, chute-load STARTTLS+AUTH, 20 connections, Maildir "
         f"delivery, {cores} cores", "",
         "| shards | delivery threads | accepted/s | p99 end of data -> 250 | end to end/s | shard loop busy | shard CPU |",
         "|---:|---:|---:|---:|---:|---|---|"]
for r in rows:
    lines.append(f"| {r['shards']} | {r['delivery_threads']} | {r['accept_per_s']:.0f} | "
                 f"{r['p99_ms']} ms | {r['end_to_end_per_s']:.0f} | "
                 f"{', '.join(f'{u:.0%}' for u in r['utilisation'])} | "
                 f"{', '.join(f'{u:.0%}' for u in r['cpu'])} |")
lines += ["", f"group_commit_delay_us at {cores} shards, 2 delivery threads:", "",
          "| group_commit_delay_us | accepted/s | p99 end of data -> 250 | end to end/s |",
          "|---:|---:|---:|---:|"]
for r in delays:
    lines.append(f"| {r['group_commit_delay_us']} | {r['accept_per_s']:.0f} | {r['p99_ms']} ms | "
                 f"{r['end_to_end_per_s']:.0f} |")
table = "\n".join(lines) + "\n"
print(table)
open(os.path.join(out, "shard_sweep.md"), "w").write(table)
json.dump(all_rows, open(os.path.join(out, "shard_sweep.json"), "w"), indent=2)
data = os.path.join(out, "shard_sweep.dat")
with open(data, "w") as f:
    for threads in sorted({r["delivery_threads"] for r in rows}):
        f.write(f'"delivery threads {threads}"\n')
        for r in rows:
            if r["delivery_threads"] == threads:
                f.write(f"{r['shards']} {r['accept_per_s']} {r['end_to_end_per_s']}\n")
        f.write("\n\n")
script = f"""
set terminal svg size 900,500 dynamic font "sans,11"
set output "{os.path.join(out, 'shard_sweep.svg')}"
set title "chuted, {messages} x 10 KB over STARTTLS+AUTH, {cores} cores"
set xlabel "shards"
set ylabel "messages/s"
set xtics 1
set yrange [0:*]
set key outside right
set grid
plot for [i=0:2] "{data}" index i using 1:2 with linespoints title "accepted, ".columnheader(1), \\
     for [i=0:2] "{data}" index i using 1:3 with linespoints dashtype 2 title "end to end, ".columnheader(1)
"""
try:
    subprocess.run(["gnuplot"], input=script, text=True, check=True)
    print(f"wrote {out}/shard_sweep.md, shard_sweep.json, shard_sweep.svg")
except (OSError, subprocess.CalledProcessError) as e:
    print(f"wrote {out}/shard_sweep.md, shard_sweep.json (no chart: gnuplot: {e})")
PY
