"""Memory per idle TLS session: an idle STARTTLS session must not cost chuted more than
IDLE_TLS_SESSION_BYTES_MAX of resident memory (issue 11's goal: 10 KB, so that 100,000 idle TLS
sessions fit in 1 GiB). It cost about 29 KB when every TLS connection kept a 16 KiB plaintext
buffer and its handshake-sized memory BIOs for as long as it stayed open; and a session quiet
after a burst kept buffers the size of the burst (the memory BIOs', the output strings').

The bound is on bytes, not time. To keep the measurement honest and steady: one shard (one
mimalloc heap); a small receive-buffer pool, made resident before the baseline (the kernel
faults its pages in as receives land in them, a fixed cost shared by all connections); some
sessions opened and closed first (lazily built state); and enough sessions that the allocator's
page granularity is small per session. Memory is read after several of the shard's one-second
ticks, on which quiet connections free their buffers and mimalloc gives freed pages back.
"""

import os
import socket
import ssl
import time
import unittest

from chute_fixture import ChutedFixture

SESSIONS = 400
WARMUP_SESSIONS = 20
IDLE_TLS_SESSION_BYTES_MAX = 10 * 1024
BURST_SESSIONS = 200
# After a burst the allocator's pages are more fragmented than after a quiet start, and the
# figure lands near 10 KB (10.4 KB seen once in a full run): this test asks only that the
# first wave's buffers were freed, and without that release it measures about 160 KB.
BURST_SESSION_BYTES_MAX = 24 * 1024
BURST_COMMANDS = 3000  # pipelined NOOPs: 18 KB in, 42 KB of replies out
# A quiet connection frees its buffers at its second tick and the pages leave at a later one
# (mimalloc decommits after a short delay): RSS is read once it has stopped falling for
# STABLE_READS reads a second apart, after SETTLE_S at least and SETTLE_MAX_S at most.
SETTLE_S = 3.5
STABLE_READS = 3
SETTLE_MAX_S = 30


def read_reply(sock):
    data = b""
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed after " + data.decode(errors="replace"))
        data += chunk
        for line in data.split(b"\r\n")[:-1]:
            if line[3:4] == b" ":
                return data.decode()


def command(sock, line, expect):
    sock.sendall(line.encode() + b"\r\n")
    reply = read_reply(sock)
    if not reply.startswith(expect):
        raise AssertionError(f"{line!r}: expected {expect}, got {reply!r}")
    return reply


def rss_bytes(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def settled_rss_bytes(pid):
    time.sleep(SETTLE_S)
    lowest = rss_bytes(pid)
    stable = 0
    end = time.monotonic() + SETTLE_MAX_S
    while stable < STABLE_READS and time.monotonic() < end:
        time.sleep(1)
        now = rss_bytes(pid)
        stable = stable + 1 if now >= lowest else 0
        lowest = min(lowest, now)
    return lowest


class IdleMemoryTest(ChutedFixture):
    with_tls = True
    shards = 1
    extra_server = "recv_buffers = 64"
    extra_limits = ('connections_per_ip_exempt = ["127.0.0.0/8"]\n'
                    "command_timeout_s = 600\n")
    fd_limit = SESSIONS + WARMUP_SESSIONS + 1024

    def setUp(self):
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < SESSIONS + 256:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(SESSIONS + 256, hard), hard))
        super().setUp()
        self.context = ssl.create_default_context()
        self.context.check_hostname = False
        self.context.verify_mode = ssl.CERT_NONE

    def connect(self, port):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no delayed-ACK stalls
        read_reply(sock)
        self.addCleanup(sock.close)
        return sock

    def starttls_session(self):
        sock = self.connect(self.tls_port)
        command(sock, "EHLO idle.test", "250")
        command(sock, "STARTTLS", "220")
        sock = self.context.wrap_socket(sock, server_hostname="relay.example.test")
        self.addCleanup(sock.close)
        command(sock, "EHLO idle.test", "250")
        return sock

    def touch_receive_buffers(self):
        # More small receives than the shard has buffers: each lands in the next one.
        socks = [self.connect(self.port) for _ in range(4)]
        for _ in range(40):
            for sock in socks:
                command(sock, "NOOP", "250")
        for sock in socks:
            sock.close()

    def warm_up(self):
        self.touch_receive_buffers()
        for sock in [self.starttls_session() for _ in range(WARMUP_SESSIONS)]:
            sock.close()

    def test_idle_starttls_session_costs_less_than_the_bound(self):
        self.warm_up()
        before = settled_rss_bytes(self.proc.pid)
        sessions = [self.starttls_session() for _ in range(SESSIONS)]
        per_session = (settled_rss_bytes(self.proc.pid) - before) / SESSIONS
        self.assertLess(per_session, IDLE_TLS_SESSION_BYTES_MAX,
                        f"an idle STARTTLS session costs {per_session:.0f} bytes")
        # The buffers given back while idle come again with the next command.
        for sock in sessions:
            command(sock, "NOOP", "250")
            command(sock, "QUIT", "221")

    def burst_sessions(self):
        sessions = []
        for _ in range(BURST_SESSIONS):
            sock = self.starttls_session()
            sock.sendall(b"NOOP\r\n" * BURST_COMMANDS)
            replies = b""
            while replies.count(b"\r\n") < BURST_COMMANDS:
                chunk = sock.recv(65536)
                self.assertTrue(chunk, "closed during the burst")
                replies += chunk
            self.assertEqual(replies, b"250 2.0.0 OK\r\n" * BURST_COMMANDS)
            sessions.append(sock)
        return sessions

    def test_sessions_quiet_after_a_burst_give_their_buffers_back(self):
        # A first wave of sessions sends a burst each and goes quiet; then a second wave. The
        # second grows RSS by little only if the first one's buffers were freed: whether the
        # allocator gave those pages back to the system or kept them, the second wave would
        # otherwise need as much again.
        self.warm_up()
        first = self.burst_sessions()
        before = settled_rss_bytes(self.proc.pid)
        second = self.burst_sessions()
        per_session = (settled_rss_bytes(self.proc.pid) - before) / BURST_SESSIONS
        self.assertLess(per_session, BURST_SESSION_BYTES_MAX,
                        f"a STARTTLS session quiet after a burst costs {per_session:.0f} bytes")
        for sock in first + second:
            command(sock, "QUIT", "221")

if __name__ == "__main__":
    unittest.main()
