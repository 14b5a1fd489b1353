#!/usr/bin/env python3
"""idle_memory.py [N]: chuted's memory per idle session, by kind of session.

For each kind, a private chuted (tests/integration/chute_fixture.py: temp dir, free loopback
ports, a STARTTLS listener with a self-signed ECDSA certificate, a trusted plaintext listener)
is started, warmed up with a few sessions of that kind (opened and closed, so that lazily
built state such as TLS tables and the first connection slots is not counted), and measured
before and after N (default 1000) idle sessions of that kind are opened and left open:

  plaintext       the trusted listener, after EHLO
  starttls        STARTTLS, the handshake (TLS 1.3), and a second EHLO
  starttls+auth   the same, then AUTH PLAIN as app@example.test
  starttls-tls1.2 as starttls, but the client offers TLS 1.2 only

What the numbers include: VmRSS (/proc/PID/status) and Pss (/proc/PID/smaps_rollup) of the
whole chuted process, read after the server has settled (RSS no longer falling, after a few of
the shards' one-second ticks; a connection quiet for a whole tick frees its buffers, and every
tick calls mimalloc's mi_collect(true), which gives freed pages back to the system). The growth
divided by N is everything an idle session costs the process: its connection slot (reused by
later connections, never freed), the smtp::Session, the TLS stream (BoringSSL's SSL object, its
session and memory BIOs), the per-connection strings, and the allocator's own overhead and
fragmentation around them. It excludes the kernel's socket buffers (not process memory) and the
shards' provided receive buffers: a fixed pool shared by all connections, which the kernel
faults in a page at a time as receives land in it, so the measurement first makes it resident
with a few thousand small receives. TLS 1.3 sessions are resumable by tickets, so the server's
session cache does not grow with them; a TLS 1.2 handshake adds its session to that cache
(BoringSSL's default: at most 20,480 sessions, for two hours, whether the connection is still
open or not), which starttls-tls1.2 counts.

RSS is the number to read. Pss also divides the pages chuted shares with other processes (the
shared libraries) among them, so it moves when unrelated processes start or exit.

Loopback only; prints, asserts nothing. Needs a release build (build/bin/chuted).
"""

import base64
import os
import resource
import socket
import ssl
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
os.environ.setdefault("CHUTE_BIN_DIR", os.path.join(ROOT, "build", "bin"))

import chute_fixture  # noqa: E402  (after the path is set)
from test_idle_memory import command, read_reply  # noqa: E402,F401  (the same SMTP helpers)

N = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
WARMUP = 20        # sessions opened and closed before the baseline
# Receives of one byte-size command each: more than every shard's receive buffers, over enough
# connections that each shard gets some (SO_REUSEPORT spreads them by hash).
TOUCH_CONNECTIONS = 16
TOUCH_ROUNDS = 400
# A quiet connection frees its buffers at its second tick (1 s) and the pages leave at a later
# one (mimalloc decommits after a short delay): memory is read once RSS has stopped falling for
# STABLE_READS reads a second apart, after SETTLE_S at least and SETTLE_MAX_S at most.
SETTLE_S = 3.5
STABLE_READS = 3
SETTLE_MAX_S = 30
FDS_PER_SESSION = 1
KINDS = ("plaintext", "starttls", "starttls+auth", "starttls-tls1.2")


class IdleChuted(chute_fixture.ChutedFixture):
    """The fixture, used outside unittest: every idle session is allowed (no per-IP cap,
    a tenant cap above N) and chuted may hold N descriptors."""
    with_tls = True
    shards = 2
    extra_limits = (f'connections_per_ip_exempt = ["127.0.0.0/8"]\n'
                    f"authenticated_connections_per_tenant = {min(max(N + WARMUP + 10, 250), 65535)}\n"
                    f"command_timeout_s = 3600\n")
    fd_limit = N * FDS_PER_SESSION + WARMUP + 1024

    def runTest(self):  # unittest wants one; unused
        pass


def connect(port):
    sock = socket.create_connection(("127.0.0.1", port))
    # Without it, the client's TLS Finished and its EHLO wait out a delayed ACK (40 ms).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    read_reply(sock)
    return sock


def open_session(chuted, kind, context):
    if kind == "plaintext":
        sock = connect(chuted.port)
        command(sock, "EHLO idle.test", "250")
        return sock
    sock = connect(chuted.tls_port)
    command(sock, "EHLO idle.test", "250")
    command(sock, "STARTTLS", "220")
    sock = context.wrap_socket(sock, server_hostname="relay.example.test")
    command(sock, "EHLO idle.test", "250")
    if kind == "starttls+auth":
        token = base64.b64encode(b"\0app@example.test\0" +
                                 chute_fixture.APP_PASSWORD.encode()).decode()
        command(sock, "AUTH PLAIN " + token, "235")
    return sock


def memory(pid):
    """(VmRSS, Pss) of `pid` in bytes."""
    rss = pss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                pss = int(line.split()[1]) * 1024
    return rss, pss


def touch_receive_buffers(chuted):
    """Makes every shard's provided receive buffers resident. Each receive lands in the next
    buffer of the shard's ring (1024 of 16 KiB by default), and the kernel faults in the page it
    writes to: without this, the first thousands of receives after start-up would add a page
    each to RSS and be counted as the sessions' cost, though the pool is fixed and shared."""
    socks = [connect(chuted.port) for _ in range(TOUCH_CONNECTIONS)]
    for _ in range(TOUCH_ROUNDS):
        for sock in socks:
            command(sock, "NOOP", "250")
    for sock in socks:
        sock.close()


def client_context(kind):
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if kind == "starttls-tls1.2":
        context.maximum_version = ssl.TLSVersion.TLSv1_2
    else:
        context.minimum_version = ssl.TLSVersion.TLSv1_3
    return context


def settled_memory(pid):
    """memory(pid) once RSS has stopped falling (see SETTLE_S)."""
    time.sleep(SETTLE_S)
    lowest = memory(pid)
    stable = 0
    end = time.monotonic() + SETTLE_MAX_S
    while stable < STABLE_READS and time.monotonic() < end:
        time.sleep(1)
        now = memory(pid)
        stable = stable + 1 if now[0] >= lowest[0] else 0
        lowest = min(lowest, now)
    return lowest


def measure(kind):
    context = client_context(kind)
    chuted = IdleChuted()
    chuted.setUp()
    try:
        pid = chuted.proc.pid
        touch_receive_buffers(chuted)
        for sock in [open_session(chuted, kind, context) for _ in range(WARMUP)]:
            sock.close()
        before = settled_memory(pid)
        sessions = [open_session(chuted, kind, context) for _ in range(N)]
        after = settled_memory(pid)
        for sock in sessions:
            sock.close()
        return [(a - b) / N for a, b in zip(after, before)], before
    finally:
        chuted.doCleanups()


def main():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = N + WARMUP + 256
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))
    print(f"chuted memory per idle session, N = {N} sessions of each kind, "
          f"{IdleChuted.shards} shards")
    print(f"{'kind':<16} {'RSS B/session':>14} {'Pss B/session':>14} {'baseline RSS':>14}")
    for kind in KINDS:
        (rss, pss), before = measure(kind)
        print(f"{kind:<16} {rss:>14.0f} {pss:>14.0f} {before[0] / 1048576:>11.1f} MiB")


if __name__ == "__main__":
    main()
