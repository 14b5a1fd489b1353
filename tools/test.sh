#!/usr/bin/env bash
# test.sh: the README's test command. Installs the Debian packages chute needs (as root),
# configures and builds the release preset with Ninja, and runs every test with ctest: unit
# tests, golden transcripts, and a short ASan+UBSan fuzz pass of the SMTP session.
# CHUTE_FUZZ_SECONDS (default 30) sets the length of that pass.
set -euo pipefail
cd "$(dirname "$0")/.."

bash tools/install-deps.sh
cmake --preset release >/dev/null
cmake --build --preset release
ctest --preset release -j "$(nproc)" "$@"
