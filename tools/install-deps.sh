#!/usr/bin/env bash
# install-deps.sh: installs the Debian packages chute needs. The one list of packages; the
# README's commands and .ci/run call it. Idempotent: when every package is already installed it
# runs no apt command at all.
#   install-deps.sh run    what building and running chuted and chutectl needs (tools/run.sh)
#   install-deps.sh        that, plus what the tests, packaging and benchmarks need (tools/test.sh)
set -euo pipefail

run_packages=(
  # toolchain
  build-essential cmake ninja-build pkg-config
  # libraries
  liburing-dev android-libboringssl-dev libabsl-dev libmimalloc-dev libgtest-dev libgmock-dev
  libbenchmark-dev libsqlite3-dev libargon2-dev libtomlplusplus-dev nlohmann-json3-dev
  libsystemd-dev libidn2-dev
  # the fleet's Redis client uses hiredis's reply reader ([fleet] redis)
  libhiredis-dev
  # the demo certificate
  openssl
  # delivery TLS verifies against the system's CAs by default ([delivery] tls_ca_file)
  ca-certificates
)
test_packages=(
  # sanitizers and fuzzing
  clang libclang-rt-14-dev
  # the format check (tools/check-format.sh)
  clang-format
  # test and benchmark peers
  python3 swaks libnet-ssleay-perl libio-socket-ssl-perl postfix curl dovecot-lmtpd
  # the TLS listeners' scan (tests/integration/test_testssl.py; it skipped without it)
  testssl.sh
  # the /usage page test renders it in a headless browser (chromium --headless, no driver)
  chromium
  # promtool (in Debian's prometheus package) lints the /metrics exposition
  prometheus
  # man pages (scdoc) and the Debian package (dpkg-shlibdeps, systemd-analyze)
  scdoc dpkg-dev systemd
  # the package under a booted systemd (tests/integration/test_systemd_boot.py: systemd-nspawn
  # over an overlay of this machine's own system; nothing is downloaded)
  systemd-container
  # the fleet's peers: Redis for the tenant leases (tests/unit/fleet, tests/integration/test_fleet.py)
  # and HAProxy in front of the nodes (deploy/haproxy.cfg)
  redis-server haproxy
  # the benchmark charts (bench/run.sh, bench/shard_sweep.sh)
  gnuplot-nox
)

case "${1:-all}" in
  run) packages=("${run_packages[@]}") ;;
  all) packages=("${run_packages[@]}" "${test_packages[@]}") ;;
  *) echo "usage: install-deps.sh [run]" >&2; exit 1 ;;
esac

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing packages: ${missing[*]}; run this script as root" >&2
  exit 2
fi
echo "install-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# Postfix is only a test peer (smtp-source, smtp-sink): install it without configuring a
# system mail service.
echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
