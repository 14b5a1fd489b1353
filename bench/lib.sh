# lib.sh: what the benchmark scripts share (sourced, not run). A work directory, free loopback
# ports, smtp-sink, a private chuted and a private Postfix instance (never the system's), and a
# cleanup that stops everything started here, by pid, on any exit.
#
# The caller sets `bin` (build/bin) and `time_limit_s`, and may set CHUTE_BENCH_SHARDS (2) and
# CHUTE_BENCH_DELIVERY_THREADS (4) and CHUTE_BENCH_COMMIT_DELAY_US ([spool] group_commit_delay_us, 500).

work="$(mktemp -d /tmp/chute-bench.XXXXXX)"
chmod 755 "$work"
pids=()
postfix_dir=""
BENCH_PASSWORD="Bench-password-2026"
cleanup() {
  if [ -n "$postfix_dir" ]; then postfix -c "$postfix_dir" stop >/dev/null 2>&1 || true; fi
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

# require_built TOOL...: each build/bin/TOOL exists, or say how to build it and exit 2.
require_built() {
  for tool in "$@"; do
    [ -x "$bin/$tool" ] || { echo "$0: $bin/$tool is missing: cmake --build --preset release" >&2; exit 2; }
  done
}

free_port() {  # a free loopback port, never one handed out before in this run
  # ($(free_port) runs in a subshell: the ports given are kept in a file.)
  local port
  while :; do
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    if ! grep -qx "$port" "$work/ports" 2>/dev/null; then
      echo "$port" >>"$work/ports"
      echo "$port"
      return
    fi
  done
}
wait_port() {
  for _ in $(seq 1 100); do
    if python3 -c "import socket,sys; socket.create_connection(('127.0.0.1',$1),1).close()" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "nothing listens on port $1" >&2; exit 2
}
now() { date +%s.%N; }
metric() {  # metric ADMIN_PORT NAME: the value of an unlabelled series
  curl -s "127.0.0.1:$1/metrics" | awk -v n="$2" '$1 == n { print $2 }'
}
wait_metric_zero() {  # wait_metric_zero ADMIN_PORT: until the spool is settled
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

# start_chute NAME DELIVERY_TOML [SERVER_TOML]: a private chuted with a trusted listener
# (port), a STARTTLS listener (tls_port, a self-signed certificate), the admin listener
# (admin) and the account app@example.test (password BENCH_PASSWORD); sets pid. It logs at
# info level into $work/NAME/chuted.log, as a production chuted logs each message.
start_chute() {
  local dir="$work/$1"
  mkdir -p "$dir" "$work/tls"
  if [ ! -f "$work/tls/cert.pem" ]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
      -subj "/CN=bench.example.test" -keyout "$work/tls/key.pem" -out "$work/tls/cert.pem" \
      2>/dev/null
  fi
  port=$(free_port)
  tls_port=$(free_port)
  admin=$(free_port)
  cat >"$dir/chute.toml" <<TOML
[server]
hostname = "bench.example.test"
shards = ${CHUTE_BENCH_SHARDS:-2}
delivery_threads = ${CHUTE_BENCH_DELIVERY_THREADS:-4}
data_dir = "$dir"
${3:-}
[[listener]]
address = "127.0.0.1:$port"
tls = "none"
allowed_networks = ["127.0.0.0/8"]
authenticate_as = "app@example.test"
[[listener]]
address = "127.0.0.1:$tls_port"
tls = "starttls"
[tls]
certificate = "$work/tls/cert.pem"
private_key = "$work/tls/key.pem"
[limits]
connections_per_ip = 10000
authenticated_connections_per_tenant = 10000
[spool]
messages_max = 1000000
group_commit_delay_us = ${CHUTE_BENCH_COMMIT_DELAY_US:-500}
bytes_max = 4294967296
[delivery]
$2
[admin]
address = "127.0.0.1:$admin"
metrics_open = true  # a throw-away chuted on loopback: the scripts read /metrics with curl
TOML
  "$bin/chutectl" --config "$dir/chute.toml" tenant add example.test --domain example.test >/dev/null
  # smtp-sink takes any recipient: a verifying route would call the account's address a
  # mailbox (builds without the check do not know the flag).
  local unchecked=""
  # (The help is read whole first: grep -q would close the pipe early, and under pipefail
  # chutectl's SIGPIPE would make the test false.)
  local help
  help=$("$bin/chutectl" --help 2>&1 || true)
  if [[ "$help" == *--no-mailbox-check* ]]; then
    unchecked="--no-mailbox-check"
  fi
  printf '%s' "$BENCH_PASSWORD" | "$bin/chutectl" --config "$dir/chute.toml" account new \
    --tenant example.test --name App --primary-smtp-address app@example.test \
    --password-stdin $unchecked >/dev/null
  "$bin/chuted" --config "$dir/chute.toml" 2>"$dir/chuted.log" &
  pid=$!
  pids+=("$pid")
  wait_port "$port"
}

stop_chute() {  # stop_chute: SIGTERM to the last one started, and wait
  kill -TERM "$pid"
  wait "$pid" || true
}

wait_postfix_empty() {  # until no message is left in the private Postfix's queue
  local deadline=$(( $(date +%s) + time_limit_s ))
  while [ "$(find "$1/maildrop" "$1/incoming" "$1/active" "$1/deferred" -type f 2>/dev/null | wc -l)" -gt 0 ]; do
    [ "$(date +%s)" -lt "$deadline" ] || { echo "Postfix did not finish" >&2; exit 2; }
    sleep 0.05
  done
}

# start_postfix RELAY_PORT: a private Postfix instance (its own configuration and queue under
# $work, logging to $work/postfix.log) relaying everything to 127.0.0.1:RELAY_PORT; sets
# postfix_port and postfix_queue. Returns 1 (with the reason on stderr) when it cannot start.
start_postfix() {
  postfix_dir="$work/postfix"
  postfix_queue="$work/pq"
  postfix_port=$(free_port)
  mkdir -p "$postfix_dir" "$postfix_queue" "$work/pd"
  chown postfix:postfix "$work/pd"
  sed "s/@LISTEN@/127.0.0.1:$postfix_port/" tests/integration/postfix/master.cf.in \
    >"$postfix_dir/master.cf"
  cat >"$postfix_dir/main.cf" <<CF
compatibility_level = 3.6
queue_directory = $postfix_queue
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
relayhost = [127.0.0.1]:$1
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
  local out
  if ! out=$(script -qc "postfix -c $postfix_dir start" /dev/null 2>&1); then
    echo "(a private Postfix instance could not be started: $out $(tail -5 "$work/postfix.log" 2>/dev/null))" >&2
    postfix_dir=""
    return 1
  fi
  wait_port "$postfix_port"
}

stop_postfix() {
  postfix -c "$postfix_dir" stop >/dev/null 2>&1 || true
  postfix_dir=""
}

ratio() { python3 -c "print(f'{$1 / $2:.2f}')"; }
