#!/usr/bin/env bash
# run.sh: the README's run command. Installs what is missing, builds chuted and chutectl when
# they are out of date, creates an embedded default in a state directory on first run, prints
# how to send a message, and runs chuted in the foreground. `tools/run.sh --help` tells more.
set -euo pipefail

usage() {
  cat <<'TXT'
Usage: tools/run.sh [--help]

Runs chuted in the foreground on a demo configuration (the README's Quick start); Ctrl-C or
SIGTERM stops it. chuted replaces this script's process (exec), so the script's pid is
chuted's.

Each run:
  - installs the packages that are missing (tools/install-deps.sh run: nothing when every one
    is installed);
  - configures build/ only when build/build.ninja is missing, then builds chuted and chutectl
    (ninja does nothing when they are up to date, and configures again by itself when a
    CMakeLists.txt changed);
  - on the first run in a state directory, creates there: chute.toml, a self-signed ECDSA
    certificate (tls/), a directory database with the tenant example.test and the HVE
    account app@example.test, and that account's generated password (demo-password). Mail is
    delivered into its mail/ Maildir; the spool and the message trace are kept there too.

Environment:
  CHUTE_VAR_DIR          the state directory (default: var/ in the repository). A second
                         copy running next to the first needs its own (one chuted per spool).
  CHUTE_SUBMISSION_PORT  the STARTTLS submission listener on 127.0.0.1 (AUTH as an HVE
                         account); default 2587
  CHUTE_TRUSTED_PORT     the trusted listener on 127.0.0.1 (no TLS, no AUTH; clients in
                         127.0.0.0/8 act as app@example.test); default 2525
  CHUTE_ADMIN_PORT       the admin listener on 127.0.0.1 (/metrics, /healthz, /usage);
                         default 9587 (chutectl uses the admin socket in the state directory)

The ports are written into the state directory's chute.toml when it is created. An existing
chute.toml keeps its ports (whatever they were set to), except those given in the
environment: each of those is written into it, and so is kept by later runs too. The
listener a port belongs to is found by its tls setting (the first "starttls" and the first
"none" listener) and the [admin] table.

A second copy next to the first:
  CHUTE_VAR_DIR=/tmp/chute2 CHUTE_SUBMISSION_PORT=3587 CHUTE_TRUSTED_PORT=3525 \
    CHUTE_ADMIN_PORT=9588 tools/run.sh
TXT
}

case "${1:-}" in
  "") ;;
  -h | --help) usage; exit 0 ;;
  *) echo "run.sh: unknown argument '$1'" >&2; usage >&2; exit 1 ;;
esac

check_port() {  # NAME VALUE
  if ! [[ "$2" =~ ^[0-9]{1,5}$ ]] || [ "$2" -lt 1 ] || [ "$2" -gt 65535 ]; then
    echo "run.sh: $1 must be a port number (1..65535), not '$2'" >&2
    exit 1
  fi
}
for name in CHUTE_SUBMISSION_PORT CHUTE_TRUSTED_PORT CHUTE_ADMIN_PORT; do
  if [ -n "${!name:-}" ]; then
    check_port "$name" "${!name}"
  fi
done

# The state directory, made absolute before the cd below (chute.toml names it absolutely).
var="${CHUTE_VAR_DIR:-$(dirname "$0")/../var}"
mkdir -p "$var"
var="$(cd "$var" && pwd)"

cd "$(dirname "$0")/.."
bash tools/install-deps.sh run
if [ ! -f build/build.ninja ]; then
  cmake --preset release >/dev/null
fi
cmake --build --preset release --target chuted chutectl  # only what it runs

# ports CONFIG [SUBMISSION TRUSTED ADMIN]: without the ports, prints the three ports CONFIG
# has now ("-" for one it has not); with them, prints CONFIG with each port that is not ""
# put in. The submission listener is the first [[listener]] with tls = "starttls", the trusted
# one the first with tls = "none", the admin port [admin] address.
ports() {
  local mode="read"
  if [ $# -gt 1 ]; then
    mode="write"
  fi
  awk -v mode="$mode" -v submission="${2:-}" -v trusted="${3:-}" -v admin="${4:-}" '
    function end_table() {
      if (table == "listener" && address_line && !(tls in first)) first[tls] = address_line
      table = ""; address_line = 0; tls = ""
    }
    function port_of(line) {
      return match(line, /:[0-9]+"/) ? substr(line, RSTART + 1, RLENGTH - 2) : "-"
    }
    function with_port(line, port) {
      if (port != "") sub(/:[0-9]+"/, ":" port "\"", line)
      return line
    }
    FNR == NR {  # the first pass: where the addresses are
      line[FNR] = $0
      if ($0 ~ /^[ \t]*\[/) {
        end_table()
        if ($0 ~ /^[ \t]*\[\[listener\]\]/) table = "listener"
        else if ($0 ~ /^[ \t]*\[admin\]/) table = "admin"
      } else if ($0 ~ /^[ \t]*address[ \t]*=/) {
        if (table == "listener") address_line = FNR
        if (table == "admin") admin_line = FNR
      } else if (table == "listener" && $0 ~ /^[ \t]*tls[ \t]*=/) {
        tls = $0; sub(/^[^"]*"/, "", tls); sub(/".*/, "", tls)
      }
      next
    }
    FNR == 1 { end_table() }
    mode == "write" {
      if (FNR == first["starttls"]) $0 = with_port($0, submission)
      else if (FNR == first["none"]) $0 = with_port($0, trusted)
      else if (FNR == admin_line) $0 = with_port($0, admin)
      print
    }
    END {
      if (mode == "read") {
        end_table()
        print port_of(line[first["starttls"]]), port_of(line[first["none"]]),
              port_of(line[admin_line])
      }
    }' "$1" "$1"
}

config="$var/chute.toml"
mkdir -p "$var/tls"
if [ ! -f "$var/tls/cert.pem" ]; then
  # A self-signed ECDSA P-256 certificate for the demo; use a real one in production.
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 825 \
    -subj "/CN=relay.example.test" -addext "subjectAltName=DNS:relay.example.test,IP:127.0.0.1" \
    -keyout "$var/tls/key.pem" -out "$var/tls/cert.pem" 2>/dev/null
  chmod 600 "$var/tls/key.pem"
fi
if [ ! -f "$config" ]; then
  cat >"$config" <<TOML
# The embedded default, made by tools/run.sh. Every key: docs/configuration.md (man chute.toml).
[server]
hostname = "relay.example.test"
data_dir = "$var"

[[listener]]                          # submission: STARTTLS, then AUTH as an HVE account
address = "127.0.0.1:${CHUTE_SUBMISSION_PORT:-2587}"
tls = "starttls"

[[listener]]                          # loopback devices: no TLS, sessions act as the account below
address = "127.0.0.1:${CHUTE_TRUSTED_PORT:-2525}"
tls = "none"
allowed_networks = ["127.0.0.0/8"]
authenticate_as = "app@example.test"

[tls]
certificate = "$var/tls/cert.pem"
private_key = "$var/tls/key.pem"

[admin]
address = "127.0.0.1:${CHUTE_ADMIN_PORT:-9587}"  # /metrics, /healthz; token in admin.token
TOML
  # 16 random letters and digits, then one of each kind of character, so that the password
  # satisfies the default password policy (12 characters, 3 of lower, upper, digit, symbol).
  password="$(openssl rand -base64 18 | tr -d '/+=' | cut -c1-16)-Aa1"
  umask 077
  printf '%s\n' "$password" >"$var/demo-password"
  umask 022
  build/bin/chutectl --config "$config" tenant add example.test --domain example.test >/dev/null
  printf '%s' "$password" | build/bin/chutectl --config "$config" account new \
    --tenant example.test --name "Demo app" --primary-smtp-address app@example.test \
    --password-stdin >/dev/null
  echo "run.sh: created $config with tenant example.test and account app@example.test"
elif [ -n "${CHUTE_SUBMISSION_PORT:-}${CHUTE_TRUSTED_PORT:-}${CHUTE_ADMIN_PORT:-}" ]; then
  # An existing configuration keeps its ports, except those the environment gives.
  ports "$config" "${CHUTE_SUBMISSION_PORT:-}" "${CHUTE_TRUSTED_PORT:-}" \
    "${CHUTE_ADMIN_PORT:-}" >"$config.new"
  if ! cmp -s "$config" "$config.new"; then
    echo "run.sh: $config: ports set from the environment"
  fi
  mv "$config.new" "$config"
fi
read -r submission_port trusted_port admin_port < <(ports "$config")
password=$(cat "$var/demo-password" 2>/dev/null || echo "(see $var/demo-password)")

cat <<TXT

chuted is starting: STARTTLS submission on 127.0.0.1:$submission_port, trusted loopback
(no AUTH) on 127.0.0.1:$trusted_port, admin on 127.0.0.1:$admin_port (state in $var).
In another terminal, send a message over STARTTLS with AUTH as the demo HVE account:

  swaks --server 127.0.0.1:$submission_port -tls --auth PLAIN \\
        --auth-user app@example.test --auth-password '$password' \\
        --from app@example.test --to alice@example.test \\
        --header "Subject: hello from chute" --body "It works."

and find it in the Maildir:

  ls $var/mail/example.test/alice/new/

(250 means the message is fsynced in the spool; delivery into new/ follows within
milliseconds. See the queue with: build/bin/chutectl --config $config queue list)

Administer accounts with: build/bin/chutectl --config $config --help
Metrics (the admin token is made at the first start, readable by root only):
  curl -s -H "Authorization: Bearer \$(cat $var/admin.token)" http://127.0.0.1:$admin_port/metrics
The usage chart in a browser: build/bin/chutectl --config $config report --link
Stop with Ctrl-C (or kill $$).

TXT
exec build/bin/chuted --config "$config"
