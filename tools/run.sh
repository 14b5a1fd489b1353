#!/usr/bin/env bash
# run.sh: the README's run command: installs what is missing, builds chute, and starts chuted
# in the foreground on an embedded default configuration under ./var.
set -euo pipefail
cd "$(dirname "$0")/.."

bash tools/install-deps.sh
cmake --preset release >/dev/null
cmake --build --preset release
if [ ! -x build/bin/chuted ]; then
  echo "run.sh: chute is built, but chuted (the server) does not exist yet: the SMTP core," >&2
  echo "run.sh: configuration and tests are in place; the io_uring engine comes next." >&2
  exit 2
fi
