#!/usr/bin/env bash
# run.sh: the README's run command. Installs what is missing, builds chute, creates an
# embedded default under ./var on first run (a configuration; a self-signed ECDSA certificate;
# a directory with tenant example.test and account app@example.test with a generated password
# kept in ./var/demo-password; a STARTTLS listener on 127.0.0.1:2587 and a trusted listener on
# 127.0.0.1:2525 for 127.0.0.0/8; Maildir delivery into ./var/mail), prints how to send a
# message, and runs chuted in the foreground. Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."

bash tools/install-deps.sh run
cmake --preset release >/dev/null
cmake --build --preset release --target chuted chutectl  # only what it runs

var="$PWD/var"
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
address = "127.0.0.1:2587"
tls = "starttls"

[[listener]]                          # loopback devices: no TLS, sessions act as the account below
address = "127.0.0.1:2525"
tls = "none"
allowed_networks = ["127.0.0.0/8"]
authenticate_as = "app@example.test"

[tls]
certificate = "$var/tls/cert.pem"
private_key = "$var/tls/key.pem"

[admin]
address = "127.0.0.1:9587"            # /metrics and /healthz
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
fi
password=$(cat "$var/demo-password" 2>/dev/null || echo "(see $var/demo-password)")

cat <<TXT

chuted is starting: STARTTLS submission on 127.0.0.1:2587, trusted loopback on 127.0.0.1:2525.
In another terminal, send a message over STARTTLS with AUTH as the demo HVE account:

  swaks --server 127.0.0.1:2587 -tls --auth PLAIN \\
        --auth-user app@example.test --auth-password '$password' \\
        --from app@example.test --to alice@example.test \\
        --header "Subject: hello from chute" --body "It works."

and find it in the Maildir:

  ls $var/mail/example.test/alice/new/

(250 means the message is fsynced in the spool; delivery into new/ follows within
milliseconds. See the queue with: build/bin/chutectl --config $config queue list)

Administer accounts with: build/bin/chutectl --config $config --help
Metrics:                  curl -s http://127.0.0.1:9587/metrics
Stop with Ctrl-C.

TXT
exec build/bin/chuted --config "$config"
