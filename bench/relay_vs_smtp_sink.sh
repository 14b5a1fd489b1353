#!/usr/bin/env bash
# relay_vs_smtp_sink.sh [MESSAGES]: in one run, measures Postfix's smtp-source
# (-d -s 20 -l 10240) against
#   1. Postfix's smtp-sink, which accepts and discards (the do-nothing ceiling), and
#   2. chuted with 1 shard and with 2 shards, delivering every message into a Maildir with an
#      fsync before each 250,
# and prints messages/s of each and the ratio to smtp-sink. Loopback only; each run is bounded
# by MESSAGES (default 20000) and a time limit. Needs a release build (tools/test.sh makes one).
set -euo pipefail
cd "$(dirname "$0")/.."
messages="${1:-20000}"
sessions=20
size=10240
time_limit_s=300
bin="$PWD/build/bin"
work="$(mktemp -d /tmp/chute-bench.XXXXXX)"
pids=()
cleanup() {
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
# rate PORT: runs smtp-source and prints messages per second.
rate() {
  local start end
  start=$(date +%s.%N)
  timeout "$time_limit_s" /usr/sbin/smtp-source -d -s "$sessions" -m "$messages" -l "$size" \
    -f app@example.test -t bench@example.test "127.0.0.1:$1"
  end=$(date +%s.%N)
  python3 -c "print(f'{$messages / ($end - $start):.0f}')"
}

sink_port=$(free_port)
/usr/sbin/smtp-sink -u nobody "127.0.0.1:$sink_port" 1024 &
pids+=($!)
wait_port "$sink_port"
sink_rate=$(rate "$sink_port")

declare -A chute_rate
for shards in 1 2; do
  dir="$work/chute-$shards"
  mkdir -p "$dir"
  port=$(free_port)
  cat >"$dir/chute.toml" <<TOML
[server]
hostname = "bench.example.test"
shards = $shards
delivery_threads = ${CHUTE_BENCH_DELIVERY_THREADS:-4}
data_dir = "$dir"
[[listener]]
address = "127.0.0.1:$port"
tls = "none"
allowed_networks = ["127.0.0.0/8"]
authenticate_as = "app@example.test"
[admin]
address = ""
TOML
  "$bin/chutectl" --config "$dir/chute.toml" tenant add example.test --domain example.test >/dev/null
  "$bin/chutectl" --config "$dir/chute.toml" account new --tenant example.test --name App \
    --primary-smtp-address app@example.test >/dev/null
  "$bin/chuted" --config "$dir/chute.toml" --log-level warning &
  pid=$!
  pids+=("$pid")
  wait_port "$port"
  chute_rate[$shards]=$(rate "$port")
  kill -TERM "$pid"
  wait "$pid"
  delivered=$(find "$dir/mail/example.test/bench/new" -type f | wc -l)
  if [ "$delivered" -ne "$messages" ]; then
    echo "chuted with $shards shard(s) delivered $delivered of $messages messages" >&2
    exit 2
  fi
done

echo
echo "smtp-source -d -s $sessions -m $messages -l $size, $(nproc) cores, loopback"
printf '%-44s %12s %10s\n' "server" "messages/s" "vs sink"
printf '%-44s %12s %10s\n' "smtp-sink (accepts, discards)" "$sink_rate" "1.00"
for shards in 1 2; do
  ratio=$(python3 -c "print(f'{${chute_rate[$shards]} / $sink_rate:.2f}')")
  printf '%-44s %12s %10s\n' "chuted, $shards shard(s), Maildir + fsync per message" \
    "${chute_rate[$shards]}" "$ratio"
done
