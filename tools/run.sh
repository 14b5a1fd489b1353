#!/usr/bin/env bash
# run.sh: the README's run command. Installs what is missing, builds chute, creates an
# embedded default under ./var on first run (a configuration, a directory with tenant
# example.test and account app@example.test, a trusted listener on 127.0.0.1:2525 for
# 127.0.0.0/8, Maildir delivery into ./var/mail), prints how to send a message, and runs
# chuted in the foreground. Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."

bash tools/install-deps.sh
cmake --preset release >/dev/null
cmake --build --preset release

var="$PWD/var"
config="$var/chute.toml"
mkdir -p "$var"
if [ ! -f "$config" ]; then
  cat >"$config" <<TOML
# The embedded default, made by tools/run.sh. Every key is documented in DESIGN.md §3.
[server]
hostname = "relay.example.test"
data_dir = "$var"

[[listener]]
address = "127.0.0.1:2525"
tls = "none"                          # loopback only: no TLS, sessions act as the account below
allowed_networks = ["127.0.0.0/8"]
authenticate_as = "app@example.test"

[admin]
address = ""
TOML
  build/bin/chutectl --config "$config" tenant add example.test --domain example.test >/dev/null
  build/bin/chutectl --config "$config" account new --tenant example.test --name "Demo app" \
    --primary-smtp-address app@example.test >/dev/null
  echo "run.sh: created $config with tenant example.test and account app@example.test"
fi

cat <<TXT

chuted is starting on 127.0.0.1:2525. In another terminal, send a message:

  swaks --server 127.0.0.1:2525 --from app@example.test --to alice@example.test \\
        --header "Subject: hello from chute" --body "It works."

and find it in the Maildir:

  ls $var/mail/example.test/alice/new/

Administer accounts with: build/bin/chutectl --config $config --help
Stop with Ctrl-C.

TXT
exec build/bin/chuted --config "$config"
