"""Real parts of a fleet for integration tests: a redis-server on a unix socket, and chuted
nodes that share one directory and keep the tenant cap together through it.

RedisProcess runs Debian's redis-server (tools/install-deps.sh installs it) with no TCP port
and nothing saved, in a temporary directory. FleetNode is one chuted with its own data
directory, an implicit-TLS listener, an admin listener and a [fleet] table; every node of a
FleetFixture reads the same directory database (made by node 0's chutectl), as nodes on one
PostgreSQL would. Everything started is stopped in the cleanups, also when a test fails.
"""

import base64
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import unittest

from chute_fixture import (APP_PASSWORD, CHUTECTL, CHUTED, free_port, make_certificate,
                           parse_metrics, sanitizer_report, wait_metric)
from test_tls_auth import client_context


class RedisProcess:
    def __init__(self, directory):
        self.dir = directory
        self.path = os.path.join(directory, "redis.sock")
        self.proc = None

    @property
    def target(self):
        return "unix:" + self.path

    def start(self):
        log = open(os.path.join(self.dir, "redis.log"), "a")
        self.proc = subprocess.Popen(
            ["redis-server", "--port", "0", "--unixsocket", self.path, "--unixsocketperm", "700",
             "--save", "", "--appendonly", "no", "--dir", self.dir],
            stdout=log, stderr=subprocess.STDOUT)
        log.close()
        end = time.monotonic() + 10
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise AssertionError("redis-server exited: " + self.read_log())
            try:
                if self.cli("PING") == "PONG":
                    return
            except OSError:
                pass
            time.sleep(0.02)
        raise AssertionError("redis-server did not answer: " + self.read_log())

    def read_log(self):
        with open(os.path.join(self.dir, "redis.log")) as f:
            return f.read()

    def cli(self, *args):
        """One command over the socket; the reply (an int, a str, a list, or None)."""
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(5)
        try:
            s.connect(self.path)
            command = f"*{len(args)}\r\n".encode()
            for arg in args:
                arg = str(arg).encode()
                command += b"$%d\r\n%s\r\n" % (len(arg), arg)
            s.sendall(command)
            return _read_reply(s.makefile("rb"))
        finally:
            s.close()

    def sessions(self, tenant):
        return self.cli("ZCARD", f"chute:tenant:{tenant}:sessions")

    def pause(self):
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self):
        self.proc.send_signal(signal.SIGCONT)

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait()
        if os.path.exists(self.path):
            os.unlink(self.path)


def _read_reply(f):
    line = f.readline()
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RuntimeError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        if n < 0:
            return None
        data = f.read(n + 2)
        return data[:-2].decode()
    if kind == b"*":
        return [_read_reply(f) for _ in range(int(rest))]
    raise RuntimeError(f"not a reply: {line!r}")


class FleetNode:
    def __init__(self, fixture, index, directory_db, extra=""):
        self.fixture = fixture
        self.index = index
        self.dir = os.path.join(fixture.dir, f"node{index}")
        os.makedirs(self.dir)
        self.port = free_port()
        self.proxy_port = free_port()
        self.admin_port = free_port()
        self.config = os.path.join(self.dir, "chute.toml")
        # Behind HAProxy (FleetFixture.proxy_listener): a STARTTLS listener that takes a PROXY
        # v2 header from 127.0.0.1 only.
        proxy_listener = f"""
[[listener]]
address = "127.0.0.1:{self.proxy_port}"
tls = "starttls"
proxy_protocol = true
trusted_proxies = ["127.0.0.1/32"]
""" if fixture.proxy_listener else ""
        with open(self.config, "w") as f:
            f.write(f"""
[server]
hostname = "relay.example.test"
shards = 2
data_dir = "{self.dir}"

[[listener]]
address = "127.0.0.1:{self.port}"
tls = "implicit"
{proxy_listener}
[tls]
certificate = "{fixture.cert}"
private_key = "{fixture.key}"

[limits]
auth_failure_delay_max_s = 0
auth_failures_per_ip = 1000000
auth_failures_per_account = 1000000
auth_failed_users_per_ip = 1000000

[directory]
database = "{directory_db}"

[admin]
address = "127.0.0.1:{self.admin_port}"

[fleet]
node_id = "node{index}"
redis = "{fixture.redis.target}"
lease_s = {fixture.lease_s}
redis_timeout_ms = 300
{extra}
""")
        self.proc = None
        self.log = None

    def start(self):
        self.log_path = os.path.join(self.dir, "chuted.log")
        self.log = open(self.log_path, "a")
        self.proc = subprocess.Popen([CHUTED, "--config", self.config], stdout=self.log,
                                     stderr=subprocess.STDOUT)
        end = time.monotonic() + 15
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise AssertionError(f"node{self.index} exited:\n" + self.read_log())
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=2) as raw:
                    with client_context().wrap_socket(raw) as tls:
                        if tls.recv(1024).startswith(b"220 "):
                            return
            except (OSError, ValueError):
                time.sleep(0.05)
        raise AssertionError(f"node{self.index} did not greet:\n" + self.read_log())

    def stop(self):
        """SIGTERM; asserts a clean exit and no sanitizer report."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                code = self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                code = "killed after 40 s"
            self.fixture.assertEqual(code, 0, f"node{self.index} did not stop cleanly:\n" +
                                     self.read_log())
        report = sanitizer_report(self.read_log())
        self.proc = None
        self.log.close()
        if report is not None:
            self.fixture.fail(f"node{self.index} reported:\n{report}")

    def kill(self):
        self.proc.kill()
        self.proc.wait()
        self.proc = None
        self.log.close()

    def read_log(self):
        with open(self.log_path) as f:
            return f.read()

    def ctl(self, *args, stdin=None, check=True):
        result = subprocess.run([CHUTECTL, "--config", self.config, *args], capture_output=True,
                                text=True, input=stdin)
        if check and result.returncode != 0:
            raise AssertionError(f"chutectl {args} failed: {result.stderr}")
        return result

    def metrics(self):
        import http.client
        with open(os.path.join(self.dir, "admin.token")) as f:
            token = f.read().strip()
        connection = http.client.HTTPConnection("127.0.0.1", self.admin_port, timeout=10)
        try:
            connection.request("GET", "/metrics", headers={"Authorization": f"Bearer {token}"})
            body = connection.getresponse().read().decode()
        finally:
            connection.close()
        return parse_metrics(body)

    def wait_metric(self, name, value, deadline_s=15):
        wait_metric(self.metrics, name, value, deadline_s, f"node{self.index}: ")

    def auth(self, source="127.0.0.1", user="app@example.test", password=APP_PASSWORD,
             port=None):
        """An implicit-TLS session from `source` that sends AUTH PLAIN: (socket, reply line)."""
        raw = socket.socket()
        raw.bind((source, 0))
        raw.settimeout(15)
        raw.connect(("127.0.0.1", port or self.port))
        tls = client_context().wrap_socket(raw)
        f = tls.makefile("rb")
        f.readline()
        tls.sendall(b"EHLO x\r\nAUTH PLAIN " +
                    base64.b64encode(f"\0{user}\0{password}".encode()) + b"\r\n")
        while True:
            line = f.readline()
            if not line or line[3:4] == b" " and not line.startswith(b"250"):
                return tls, line


class FleetFixture(unittest.TestCase):
    nodes_count = 3
    lease_s = 3
    node_extra = {}  # index -> more TOML for that node
    proxy_listener = False  # each node also listens behind a proxy (FleetNode.proxy_port)

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="chute-fleet-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.cert, self.key = make_certificate(self.dir)
        self.redis = RedisProcess(self.dir)
        self.redis.start()
        self.addCleanup(self.redis.kill)
        directory_db = os.path.join(self.dir, "directory.db")
        self.nodes = [FleetNode(self, i, directory_db, self.node_extra.get(i, ""))
                      for i in range(self.nodes_count)]
        first = self.nodes[0]
        first.ctl("tenant", "add", "example.test", "--domain", "example.test")
        first.ctl("account", "new", "--tenant", "example.test", "--name", "App",
                  "--primary-smtp-address", "app@example.test", "--password-stdin",
                  stdin=APP_PASSWORD)
        for node in self.nodes:
            self.addCleanup(node.stop)
            node.start()
        self.wait_fleet(self.nodes_count)

    def wait_fleet(self, alive, deadline_s=15):
        """Until every running node sees `alive` nodes in Redis."""
        for node in self.nodes:
            if node.proc is not None:
                node.wait_metric("chute_fleet_nodes_alive", alive, deadline_s)
