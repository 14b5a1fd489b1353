#!/usr/bin/env bash
# spool_bench.sh [MESSAGES]: the spool and delivery figures, in one run on this machine, with
# Postfix's smtp-source (-s 20 sessions, 10 KB messages) as the client:
#   A. acceptance: smtp-sink (accepts and discards: the ceiling) vs chuted, where every 250
#      means fsynced in the spool (delivery points at a closed port, so it only fills the spool);
#   B. end to end into Maildir: from the first message sent to the last one renamed into new/
#      and settled (measured through /metrics);
#   C. relay to smtp-sink: chuted (backend smtp) vs a private Postfix instance relaying to the
#      same smtp-sink, each from the first message sent until its queue is empty (chuted: the
#      spool settled, every recipient delivered; Postfix: its queue directories empty).
# Prints messages/s and ratios, and the group-commit sizes seen. Loopback only; every run is
# bounded by MESSAGES (default 20000) and a time limit; everything it starts it stops.
set -euo pipefail
cd "$(dirname "$0")/.."
messages="${1:-20000}"
sessions=20
size=10240
time_limit_s=300
bin="${CHUTE_BENCH_BIN:-$PWD/build/bin}"  # CHUTE_BENCH_BIN: another build's binaries
source bench/lib.sh
require_built chuted chutectl
send() {  # send PORT: smtp-source, bounded in time
  timeout "$time_limit_s" /usr/sbin/smtp-source -d -s "$sessions" -m "$messages" -l "$size" \
    -f app@example.test -t bench@example.test "127.0.0.1:$1"
}
rate() { python3 -c "print(f'{$messages / ($2 - $1):.0f}')"; }
groups_line() {  # the mean group-commit size from /metrics
  local sum count
  sum=$(metric "$1" chute_spool_group_commit_records_sum)
  count=$(metric "$1" chute_spool_group_commit_records_count)
  python3 -c "print(f'{$sum} records in {$count} group commits: {$sum / max($count, 1):.1f} per fdatasync')"
}

# A. acceptance.
sink_port=$(free_port)
start_sink "$sink_port"
t0=$(now); send "$sink_port"; t1=$(now)
sink_rate=$(rate "$t0" "$t1")
start_chute accept $'backend = "smtp"\ntarget = "127.0.0.1:9"\ntls = "off"\nretry_initial_s = 3600'
t0=$(now); send "$port"; t1=$(now)
accept_rate=$(rate "$t0" "$t1")
accept_groups=$(groups_line "$admin")
stop_chute

# B. end to end into Maildir.
start_chute maildir 'backend = "maildir"'
t0=$(now); send "$port"; wait_metric_zero "$admin"; t1=$(now)
maildir_rate=$(rate "$t0" "$t1")
maildir_batches=$(curl -s "127.0.0.1:$admin/metrics" | awk '/^chute_delivery_batches_total/ { print $2 }')
delivered=$(find "$work/maildir/mail/example.test/bench/new" -type f | wc -l)
[ "$delivered" -eq "$messages" ] || { echo "maildir: $delivered of $messages delivered" >&2; exit 2; }
# The message trace: two events per message (received, delivered), written by its own thread.
for _ in $(seq 1 100); do
  [ "$(metric "$admin" chute_trace_events_written_total)" -ge $((2 * messages)) ] && break
  sleep 0.1
done
trace_lag=$(python3 -c "print(f'{$(now) - $t1:.2f}')")
# Its cost: the CPU time of the chute-trace thread against chuted's whole.
trace_cpu=$(python3 - "$pid" "$messages" <<'PY'
import glob, os, sys
pid, messages = sys.argv[1], int(sys.argv[2])
tick = os.sysconf("SC_CLK_TCK")
def cpu(stat):
    fields = open(stat).read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / tick
total = cpu(f"/proc/{pid}/stat")
trace = sum(cpu(f"{t}/stat") for t in glob.glob(f"/proc/{pid}/task/*")
            if open(f"{t}/comm").read().strip() == "chute-trace")
print(f"trace thread {trace:.2f} s CPU of chuted's {total:.2f} s "
      f"({1e6 * trace / messages:.0f} us per message)")
PY
)
trace_line="$(metric "$admin" chute_trace_events_written_total) events written, $(metric "$admin" chute_trace_events_dropped_total) dropped, all in the trace ${trace_lag} s after the last message settled; $(wc -l <"$work/maildir/chuted.log") log lines; $trace_cpu"
stop_chute

# C. relay to smtp-sink: chuted, then Postfix.
relay_sink=$(free_port)
# The sink does not dump what it receives (dumping makes it the bottleneck): chuted is done
# when its spool is settled and every recipient counted delivered, Postfix when its queue
# directories are empty.
start_sink "$relay_sink"
start_chute relay "$(printf 'backend = "smtp"\ntarget = "127.0.0.1:%s"\ntls = "off"\nconnections_max = 16' "$relay_sink")"
t0=$(now); send "$port"; wait_metric_zero "$admin"; t1=$(now)
relay_rate=$(rate "$t0" "$t1")
received=$(curl -s "127.0.0.1:$admin/metrics" | awk '/^chute_delivery_recipients_delivered_total/ { print $2 }')
[ "$received" -eq "$messages" ] || { echo "relay: $received of $messages delivered" >&2; exit 2; }
stop_chute

postfix_rate=""
postfix_sink=$(free_port)
start_sink "$postfix_sink"
if start_postfix "$postfix_sink"; then
  t0=$(now); send "$postfix_port"; wait_postfix_empty "$postfix_queue"; t1=$(now)
  postfix_rate=$(rate "$t0" "$t1")
  sleep 1  # postlogd writes the log asynchronously
  postfix_sent=$(grep -c "status=sent" "$work/postfix.log" || true)
  stop_postfix
fi

echo
echo "smtp-source -d -s $sessions -m $messages -l $size, $(nproc) cores, loopback, chuted 2 shards"
printf '%-62s %10s %10s\n' "run" "msg/s" "ratio"
printf '%-62s %10s %10s\n' "A  smtp-sink (accepts, discards): the ceiling" "$sink_rate" "1.00"
printf '%-62s %10s %10s\n' "A  chuted acceptance, 250 = fsynced in the spool" "$accept_rate" "$(ratio "$accept_rate" "$sink_rate") of sink"
printf '%-62s %10s %10s\n' "B  chuted end to end into Maildir (settled)" "$maildir_rate" "$(ratio "$maildir_rate" "$sink_rate") of sink"
printf '%-62s %10s %10s\n' "C  chuted relaying to smtp-sink (all settled)" "$relay_rate" "$(ratio "$relay_rate" "$sink_rate") of sink"
if [ -n "$postfix_rate" ]; then
  printf '%-62s %10s %10s\n' "C  Postfix relaying to smtp-sink (queue empty)" "$postfix_rate" "$(ratio "$postfix_rate" "$sink_rate") of sink"
  echo "C  chuted / Postfix: $(ratio "$relay_rate" "$postfix_rate")x (Postfix logged $postfix_sent of $messages as sent)"
fi
echo "A  group commit: $accept_groups"
echo "B  message trace: $trace_line"
echo "B  Maildir batches: $maildir_batches for $messages messages ($(python3 -c "print(f'{$messages / max($maildir_batches, 1):.1f}')") per batch, two syncfs each)"
