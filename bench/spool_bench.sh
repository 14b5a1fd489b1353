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
bin="$PWD/build/bin"
work="$(mktemp -d /tmp/chute-spool-bench.XXXXXX)"
chmod 755 "$work"
pids=()
postfix_dir=""
cleanup() {
  if [ -n "$postfix_dir" ]; then postfix -c "$postfix_dir" stop >/dev/null 2>&1 || true; fi
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
  for _ in $(seq 1 100); do
    if python3 -c "import socket,sys; socket.create_connection(('127.0.0.1',$1),1).close()" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "nothing listens on port $1" >&2; exit 2
}
now() { date +%s.%N; }
rate() { python3 -c "print(f'{$messages / ($2 - $1):.0f}')"; }
send() {  # send PORT: smtp-source, bounded in time
  timeout "$time_limit_s" /usr/sbin/smtp-source -d -s "$sessions" -m "$messages" -l "$size" \
    -f app@example.test -t bench@example.test "127.0.0.1:$1"
}
metric() {  # metric ADMIN_PORT NAME
  curl -s "127.0.0.1:$1/metrics" | awk -v n="$2" '$1 == n { print $2 }'
}
wait_metric_zero() {  # until the spool is settled
  local deadline=$(( $(date +%s) + time_limit_s ))
  while [ "$(metric "$1" chute_spool_messages)" != "0" ]; do
    [ "$(date +%s)" -lt "$deadline" ] || { echo "delivery did not finish" >&2; exit 2; }
    sleep 0.02
  done
}
# start_sink PORT: smtp-sink, accepting and discarding.
start_sink() {
  /usr/sbin/smtp-sink -u nobody "127.0.0.1:$1" 1024 &
  pids+=($!)
  wait_port "$1"
}
wait_postfix_empty() {  # until no message is left in the private Postfix's queue
  local deadline=$(( $(date +%s) + time_limit_s ))
  while [ "$(find "$1/maildrop" "$1/incoming" "$1/active" "$1/deferred" -type f 2>/dev/null | wc -l)" -gt 0 ]; do
    [ "$(date +%s)" -lt "$deadline" ] || { echo "Postfix did not finish" >&2; exit 2; }
    sleep 0.05
  done
}
# chute NAME DELIVERY_TOML: starts chuted; sets port, admin, pid.
start_chute() {
  local dir="$work/$1"
  mkdir -p "$dir"
  port=$(free_port)
  admin=$(free_port)
  cat >"$dir/chute.toml" <<TOML
[server]
hostname = "bench.example.test"
shards = 2
delivery_threads = ${CHUTE_BENCH_DELIVERY_THREADS:-4}
data_dir = "$dir"
[[listener]]
address = "127.0.0.1:$port"
tls = "none"
allowed_networks = ["127.0.0.0/8"]
authenticate_as = "app@example.test"
[spool]
messages_max = 1000000
bytes_max = 4294967296
[delivery]
$2
[admin]
address = "127.0.0.1:$admin"
TOML
  "$bin/chutectl" --config "$dir/chute.toml" tenant add example.test --domain example.test >/dev/null
  "$bin/chutectl" --config "$dir/chute.toml" account new --tenant example.test --name App \
    --primary-smtp-address app@example.test --no-password >/dev/null
  "$bin/chuted" --config "$dir/chute.toml" --log-level warning &
  pid=$!
  pids+=("$pid")
  wait_port "$port"
}
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
kill -TERM "$pid"; wait "$pid" || true

# B. end to end into Maildir.
start_chute maildir 'backend = "maildir"'
t0=$(now); send "$port"; wait_metric_zero "$admin"; t1=$(now)
maildir_rate=$(rate "$t0" "$t1")
maildir_batches=$(curl -s "127.0.0.1:$admin/metrics" | awk '/^chute_delivery_batches_total/ { print $2 }')
delivered=$(find "$work/maildir/mail/example.test/bench/new" -type f | wc -l)
[ "$delivered" -eq "$messages" ] || { echo "maildir: $delivered of $messages delivered" >&2; exit 2; }
kill -TERM "$pid"; wait "$pid" || true

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
kill -TERM "$pid"; wait "$pid" || true

postfix_rate=""
postfix_sink=$(free_port)
start_sink "$postfix_sink"
postfix_dir="$work/postfix"
postfix_port=$(free_port)
mkdir -p "$postfix_dir" "$work/pq" "$work/pd"
chown postfix:postfix "$work/pd"
sed "s/@LISTEN@/127.0.0.1:$postfix_port/" tests/integration/postfix/master.cf.in \
  >"$postfix_dir/master.cf"
cat >"$postfix_dir/main.cf" <<CF
compatibility_level = 3.6
queue_directory = $work/pq
data_directory = $work/pd
meta_directory = /etc/postfix
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = postfix-bench.example.test
mydomain = example.test
mydestination =
mynetworks = 127.0.0.0/8
relayhost = [127.0.0.1]:$postfix_sink
alias_maps =
alias_database =
local_recipient_maps =
disable_dns_lookups = yes
smtp_host_lookup = native
smtputf8_enable = no
maillog_file = $work/postfix.log
maillog_file_prefixes = $work
smtp_tls_security_level = none
smtpd_tls_security_level = none
CF
export MAIL_CONFIG="$postfix_dir"
if postfix_out=$(script -qc "postfix -c $postfix_dir start" /dev/null 2>&1); then
  wait_port "$postfix_port"
  t0=$(now); send "$postfix_port"; wait_postfix_empty "$work/pq"; t1=$(now)
  postfix_rate=$(rate "$t0" "$t1")
  sleep 1  # postlogd writes the log asynchronously
  postfix_sent=$(grep -c "status=sent" "$work/postfix.log" || true)
  postfix -c "$postfix_dir" stop >/dev/null 2>&1 || true
  postfix_dir=""
else
  echo "(a private Postfix instance could not be started; C has no Postfix reference: $postfix_out $(cat "$work/postfix.log" 2>/dev/null | tail -5))" >&2
fi

ratio() { python3 -c "print(f'{$1 / $2:.2f}')"; }
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
echo "B  Maildir batches: $maildir_batches for $messages messages ($(python3 -c "print(f'{$messages / max($maildir_batches, 1):.1f}')") per batch, two syncfs each)"
