"""chuted and systemd's notification protocol (Type=notify, WatchdogSec=).

The test plays the service manager: it binds a unix datagram socket, starts chuted with
NOTIFY_SOCKET pointing at it and WATCHDOG_USEC set, and reads what chuted sends: READY=1 only
once the listener accepts connections, STATUS= lines, repeated WATCHDOG=1, RELOADING=1 (with
MONOTONIC_USEC=) then READY=1 around SIGHUP, and STOPPING=1 on SIGTERM.
"""

import ctypes
import os
import signal
import socket
import time
import unittest

import chute_fixture
from chute_fixture import ChutedFixture

# The watchdog period given to chuted: it pings every half period (2 s), when its shards'
# event loops have turned (an idle shard turns once a second).
WATCHDOG_USEC = 4_000_000
DEADLINE_S = 20
libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
PTRACE_SEIZE, PTRACE_INTERRUPT, PTRACE_DETACH = 0x4206, 0x4207, 0x11
WALL = 0x40000000  # waitpid's __WALL: wait for a thread, not only a child


class NotifyTest(ChutedFixture):
    shards = 2

    def setUp(self):
        self.notify_dir = __import__("tempfile").mkdtemp(prefix="chute-notify-")
        self.notify_path = os.path.join(self.notify_dir, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.notify_path)
        self.addCleanup(self.sock.close)
        self.addCleanup(lambda: __import__("shutil").rmtree(self.notify_dir, True))
        self.extra_env = {"NOTIFY_SOCKET": self.notify_path, "WATCHDOG_USEC": str(WATCHDOG_USEC)}
        self.received = []  # every notification, in order, as a list of lines
        self.ready_connect_ok = None
        # The fixture waits for the port with wait_for_port(); here we wait for READY=1 first,
        # then connect once, without retrying: READY=1 must mean the listener is open.
        original = chute_fixture.wait_for_port

        def wait_for_ready_then_port(host, port, deadline_s=15.0):
            self.wait_for(lambda m: "READY=1" in m)
            try:
                with socket.create_connection((host, port), timeout=5) as s:
                    self.ready_connect_ok = s.recv(1024).startswith(b"220")
            except OSError:
                self.ready_connect_ok = False
            original(host, port, deadline_s)

        chute_fixture.wait_for_port = wait_for_ready_then_port
        try:
            super().setUp()
        finally:
            chute_fixture.wait_for_port = original

    def wait_for(self, predicate, deadline_s=DEADLINE_S):
        """Reads notifications until one satisfies `predicate` (a list of lines); returns it."""
        end = time.monotonic() + deadline_s
        while True:
            remaining = end - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no such notification; got {self.received}")
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            message = data.decode().split("\n")
            self.received.append(message)
            if predicate(message):
                return message

    def test_ready_only_when_the_listener_accepts(self):
        self.assertTrue(self.ready_connect_ok, "READY=1 came before the listener greeted")
        self.assertEqual(sum("READY=1" in m for m in self.received), 1)

    def test_status_reports_connections_and_queue(self):
        status = self.wait_for(lambda m: any(line.startswith("STATUS=") for line in m))
        line = next(line for line in status if line.startswith("STATUS="))
        self.assertRegex(line, r"^STATUS=\d+ connection\(s\), \d+ message\(s\) queued$")

    def test_watchdog_pings_repeat(self):
        # One ping comes with READY=1; two more need the shards to keep turning while idle.
        for _ in range(3):
            self.wait_for(lambda m: "WATCHDOG=1" in m)
        self.assertNotIn("has not turned", self.read_log())

    def test_watchdog_withheld_while_shards_are_stopped(self):
        # Every thread but the main one is stopped (ptrace: PTRACE_SEIZE + PTRACE_INTERRUPT
        # stops one thread, not the process), so the shards' loops stop turning while the main
        # thread, which pings, runs on.
        threads = [int(t) for t in os.listdir(f"/proc/{self.proc.pid}/task")
                   if int(t) != self.proc.pid]
        stopped = []
        self.drain()  # what was sent before the stop
        self.received.clear()
        try:
            for tid in threads:
                if libc.ptrace(PTRACE_SEIZE, tid, None, None) != 0:
                    self.skipTest(f"ptrace: {os.strerror(ctypes.get_errno())}")
                stopped.append(tid)
                libc.ptrace(PTRACE_INTERRUPT, tid, None, None)
                os.waitpid(tid, WALL)
            # A check finds the shards stuck and names them; from then on every check does,
            # and none pings. (Before it, a ping may still come from a check that saw turns
            # made before the stop.)
            self.wait_for_stuck_checks(1)
            self.drain()
            self.received.clear()
            self.wait_for_stuck_checks(3)
            self.assertIn("shard 1: its event loop has not turned", self.read_log())
            self.drain()
            pings = sum("WATCHDOG=1" in m for m in self.received)
            self.assertEqual(pings, 0, self.received)
        finally:
            for tid in stopped:
                libc.ptrace(PTRACE_DETACH, tid, None, None)
        # Running again: the pings come back.
        self.wait_for(lambda m: "WATCHDOG=1" in m)

    def wait_for_stuck_checks(self, count):
        end = time.monotonic() + DEADLINE_S
        while self.read_log().count("shard 0: its event loop has not turned") < count:
            self.assertLess(time.monotonic(), end, self.read_log())
            time.sleep(0.05)

    def drain(self):
        """Reads the notifications already queued on the socket."""
        self.sock.setblocking(False)
        try:
            while True:
                self.received.append(self.sock.recv(4096).decode().split("\n"))
        except BlockingIOError:
            pass
        finally:
            self.sock.setblocking(True)

    def test_sighup_reloading_then_ready(self):
        self.proc.send_signal(signal.SIGHUP)
        reloading = self.wait_for(lambda m: "RELOADING=1" in m)
        monotonic = [line for line in reloading if line.startswith("MONOTONIC_USEC=")]
        self.assertEqual(len(monotonic), 1, reloading)
        self.assertGreater(int(monotonic[0].split("=", 1)[1]), 0)
        self.wait_for(lambda m: "READY=1" in m)

    def test_sigterm_stopping(self):
        self.proc.send_signal(signal.SIGTERM)
        self.wait_for(lambda m: "STOPPING=1" in m)
        self.assertEqual(self.proc.wait(timeout=40), 0, self.read_log())


class NoNotifySocketTest(ChutedFixture):
    """Without NOTIFY_SOCKET (a plain start, or Type=simple) chuted runs and stops as before."""
    shards = 1

    def test_runs_without_a_notify_socket(self):
        self.proc.send_signal(signal.SIGHUP)
        self.wait_for_log("configuration reloaded")
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            self.assertTrue(s.recv(1024).startswith(b"220"))
        self.assertIsNone(self.proc.poll())

    def wait_for_log(self, text, deadline_s=DEADLINE_S):
        end = time.monotonic() + deadline_s
        while text not in self.read_log():
            if time.monotonic() > end:
                raise AssertionError(f"no {text!r} in the log:\n{self.read_log()}")
            time.sleep(0.05)


if __name__ == "__main__":
    unittest.main()
