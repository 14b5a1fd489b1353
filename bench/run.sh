#!/usr/bin/env bash
# run.sh [MESSAGES]: the benchmark suite, in one go on this machine, against references
# measured in the same run (the machine is shared and noisy: read the ratios, not the
# absolute numbers). Every run sends MESSAGES (default 20000) messages of 10 KB from 20
# sessions over loopback:
#
#   smtp-source -> smtp-sink                       the do-nothing ceiling
#   smtp-source -> Postfix -> smtp-sink            a private Postfix instance (configured in a
#                                                  temporary directory, stopped again: the
#                                                  system's Postfix is never touched)
#   smtp-source -> chuted (trusted) -> smtp-sink
#   chute-load  -> smtp-sink, Postfix, chuted (trusted): the same, with latencies
#   chute-load  -> chuted STARTTLS+AUTH, persistent and reconnect (a printer: connect, TLS,
#                  AUTH, one message, QUIT)
#
# Relay runs end when the relay's queue is empty (chuted: spool settled; Postfix: queue
# directories empty), so a relay's rate includes its delivery. Prints one Markdown table
# (messages/s, p99 end of data -> 250, ratio to smtp-sink with the same client, the exact
# commands) and writes it with the raw figures as build/bench/run.{md,json}, and a chart as
# build/bench/run.svg (gnuplot). CHUTE_BENCH_BIN=DIR runs another build's chuted, chutectl and
# chute-load (two commits compared on one machine). Loopback only; bounded in count and time;
# everything it starts it stops.
set -euo pipefail
cd "$(dirname "$0")/.."
messages="${1:-20000}"
sessions=20
size=10240
time_limit_s=300
bin="${CHUTE_BENCH_BIN:-$PWD/build/bin}"  # CHUTE_BENCH_BIN: another build's binaries, e.g. to compare two commits
out="$PWD/build/bench"
mkdir -p "$out"
source bench/lib.sh
require_built chuted chutectl chute-load

rows="$work/rows.jsonl"  # one JSON object per run
: >"$rows"

# record NAME CLIENT ELAPSED_S COMMAND [CHUTE_LOAD_JSON]: one row of the table.
record() {
  python3 - "$1" "$2" "$3" "$messages" "$4" "${5:-}" >>"$rows" <<'PY'
import json, sys
name, client, elapsed, messages, command, load = sys.argv[1:7]
row = {"run": name, "client": client, "command": command,
       "messages_per_s": round(int(messages) / float(elapsed), 1), "p99_ms": None}
if load:
    j = json.loads(load)
    if j.get("messages") != int(messages) or j.get("error_total", 0) != 0:
        sys.exit(f"{name}: chute-load answered {j.get('messages')} of {messages}, "
                 f"errors {j.get('errors')}")
    row["p99_ms"] = round(j["latency_us"]["end_of_data_to_250"]["p99"] / 1000, 2)
    row["chute_load"] = j
print(json.dumps(row))
PY
}

source_cmd() { echo "smtp-source -d -s $sessions -m $messages -l $size -f app@example.test -t bench@example.test 127.0.0.1:$1"; }
run_source() {  # run_source PORT: smtp-source, bounded in time
  timeout "$time_limit_s" /usr/sbin/$(source_cmd "$1") >/dev/null
}
load_cmd() {  # load_cmd PORT [ARGS...]: the chute-load command line
  local port="$1"; shift
  echo "chute-load --target 127.0.0.1:$port --connections $sessions --messages $messages --size $size --from app@example.test --to bench@example.test --no-progress --json $*"
}
run_load() {  # run_load PORT [ARGS...]: chute-load's JSON summary
  timeout "$time_limit_s" "$bin/"$(load_cmd "$@")
}
elapsed() { python3 -c "print($2 - $1)"; }

# --- the references: smtp-sink and Postfix --------------------------------------------------
sink=$(free_port)
start_sink "$sink"
t0=$(now); run_source "$sink"; t1=$(now)
record "smtp-sink" smtp-source "$(elapsed "$t0" "$t1")" "$(source_cmd "$sink")"
t0=$(now); j=$(run_load "$sink"); t1=$(now)
record "smtp-sink" chute-load "$(python3 -c "import json,sys; print(json.loads(sys.argv[1])['elapsed_s'])" "$j")" "$(load_cmd "$sink")" "$j"

relay_sink=$(free_port)
start_sink "$relay_sink"
if start_postfix "$relay_sink"; then
  t0=$(now); run_source "$postfix_port"; wait_postfix_empty "$postfix_queue"; t1=$(now)
  record "Postfix -> smtp-sink" smtp-source "$(elapsed "$t0" "$t1")" "$(source_cmd "$postfix_port")"
  t0=$(now); j=$(run_load "$postfix_port"); wait_postfix_empty "$postfix_queue"; t1=$(now)
  record "Postfix -> smtp-sink" chute-load "$(elapsed "$t0" "$t1")" "$(load_cmd "$postfix_port")" "$j"
  stop_postfix
fi

# --- chuted, relaying to smtp-sink ----------------------------------------------------------
relay_toml="$(printf 'backend = "smtp"\ntarget = "127.0.0.1:%s"\ntls = "off"\nconnections_max = 16' "$relay_sink")"
start_chute relay "$relay_toml"
t0=$(now); run_source "$port"; wait_metric_zero "$admin"; t1=$(now)
record "chuted (trusted) -> smtp-sink" smtp-source "$(elapsed "$t0" "$t1")" "$(source_cmd "$port")"
t0=$(now); j=$(run_load "$port"); wait_metric_zero "$admin"; t1=$(now)
record "chuted (trusted) -> smtp-sink" chute-load "$(elapsed "$t0" "$t1")" "$(load_cmd "$port")" "$j"
printf '%s' "$BENCH_PASSWORD" >"$work/password"
auth="--tls starttls --user app@example.test --password-file $work/password"
t0=$(now); j=$(run_load "$tls_port" $auth --scenario persistent); wait_metric_zero "$admin"; t1=$(now)
record "chuted STARTTLS+AUTH persistent -> smtp-sink" chute-load "$(elapsed "$t0" "$t1")" "$(load_cmd "$tls_port" $auth --scenario persistent)" "$j"
t0=$(now); j=$(run_load "$tls_port" $auth --scenario reconnect); wait_metric_zero "$admin"; t1=$(now)
record "chuted STARTTLS+AUTH reconnect -> smtp-sink" chute-load "$(elapsed "$t0" "$t1")" "$(load_cmd "$tls_port" $auth --scenario reconnect)" "$j"
stop_chute

# --- the table, the JSON, the chart ---------------------------------------------------------
python3 - "$rows" "$out" "$messages" "$sessions" "$size" <<'PY'
import json, os, subprocess, sys
rows_path, out, messages, sessions, size = sys.argv[1:6]
rows = [json.loads(line) for line in open(rows_path)]
ceiling = {r["client"]: r["messages_per_s"] for r in rows if r["run"] == "smtp-sink"}
for r in rows:
    r["ratio_to_sink"] = round(r["messages_per_s"] / ceiling[r["client"]], 2)
lines = [f"{messages} messages of {size} bytes from {sessions} sessions, {os.cpu_count()} cores, "
         "loopback; relays deliver to smtp-sink and are timed until their queue is empty.", "",
         "| run | client | messages/s | p99 end of data -> 250 | ratio to smtp-sink |",
         "|---|---|---:|---:|---:|"]
for r in rows:
    p99 = f"{r['p99_ms']} ms" if r["p99_ms"] is not None else "n/a (smtp-source reports none)"
    lines.append(f"| {r['run']} | {r['client']} | {r['messages_per_s']:.0f} | {p99} | "
                 f"{r['ratio_to_sink']:.2f} |")
lines += ["", "Commands:", ""] + [f"    {r['command']}" for r in rows]
table = "\n".join(lines) + "\n"
print(table)
open(os.path.join(out, "run.md"), "w").write(table)
json.dump({"messages": int(messages), "sessions": int(sessions), "size_bytes": int(size),
           "cores": os.cpu_count(), "rows": rows}, open(os.path.join(out, "run.json"), "w"),
          indent=2)
data = os.path.join(out, "run.dat")
with open(data, "w") as f:
    for r in rows:
        label = f"{r['run']} ({r['client']})".replace('"', "'")
        f.write(f"\"{label}\" {r['messages_per_s']}\n")
script = f"""
set terminal svg size 1000,{120 + 40 * len(rows)} dynamic font "sans,11"
set output "{os.path.join(out, 'run.svg')}"
set title "messages/s, {messages} x {size} B, {sessions} sessions, loopback ({os.cpu_count()} cores)"
set style fill solid 0.8 border -1
set yrange [-0.5:{len(rows) - 0.5}]
set ytics nomirror
set xlabel "messages/s"
set xrange [0:*]
set grid xtics
unset key
plot "{data}" using ($2*0.5):0:($2*0.5):(0.35):yticlabels(1) with boxxyerror
"""
try:
    subprocess.run(["gnuplot"], input=script, text=True, check=True)
    print(f"wrote {out}/run.md, run.json, run.svg")
except (OSError, subprocess.CalledProcessError) as e:
    print(f"wrote {out}/run.md, run.json (no chart: gnuplot: {e})")
PY
