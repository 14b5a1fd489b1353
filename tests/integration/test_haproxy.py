"""The shipped deploy/haproxy/haproxy.cfg, run by a real HAProxy in front of three chuted
nodes: its health checks (SMTP behind a PROXY v2 LOCAL header) pass, a stopped node leaves the
rotation, chute sees each client's own address through PROXY v2, and the 101st concurrent
connection from one address gets a real 421 from HAProxy (its Lua service), not a reset.

Only what cannot run in a test is changed in the file: the paths, the listening address and the
node lines (the nodes listen on free loopback ports), and the daemon/user/chroot settings."""

import os
import re
import socket
import subprocess
import time

from chute_fixture import free_port
from fleet_fixture import FleetFixture

HERE = os.path.dirname(os.path.abspath(__file__))
DEPLOY = os.path.join(HERE, "..", "..", "deploy", "haproxy")
REFUSAL = b"421 4.7.0 Too many concurrent connections from this IP\r\n"


class HaproxyTest(FleetFixture):
    proxy_listener = True

    def setUp(self):
        super().setUp()
        self.haproxy_port = free_port()
        self.stats = os.path.join(self.dir, "haproxy.sock")
        with open(os.path.join(DEPLOY, "haproxy.cfg")) as f:
            text = f.read()
        servers = "".join(f"    server node{n.index + 1} 127.0.0.1:{n.proxy_port}\n"
                          for n in self.nodes)
        for pattern, replacement in [
                (r"    log /dev/log local0\n", ""),
                (r"    log global\n", ""),
                (r"    chroot .*\n", ""),
                (r"    user haproxy\n", ""),
                (r"    group haproxy\n", ""),
                (r"    daemon\n", ""),
                (r"stats socket \S+", f"stats socket {self.stats}"),
                (r"lua-load \S+", f"lua-load {os.path.join(DEPLOY, 'chute-421.lua')}"),
                (r"maxconn 200000", "maxconn 4000"),
                (r"    bind :587\n    bind :465\n", f"    bind 127.0.0.1:{self.haproxy_port}\n"),
                # The nodes' ports differ here, so the checks go to each server's own port.
                (r" port 587", ""),
                (r"(    server node\d 10\.0\.0\.\d+\n)+", servers)]:
            text, count = re.subn(pattern, replacement, text)
            self.assertEqual(count, 1, f"deploy/haproxy/haproxy.cfg no longer has {pattern!r}")
        config = os.path.join(self.dir, "haproxy.cfg")
        with open(config, "w") as f:
            f.write(text)
        check = subprocess.run(["haproxy", "-c", "-f", config], capture_output=True, text=True)
        self.assertEqual(check.returncode, 0, check.stdout + check.stderr)
        self.haproxy_log = open(os.path.join(self.dir, "haproxy.log"), "w")
        self.haproxy = subprocess.Popen(["haproxy", "-db", "-f", config],
                                        stdout=self.haproxy_log, stderr=subprocess.STDOUT)
        self.addCleanup(self.stop_haproxy)
        self.wait_status({f"node{n.index + 1}": "UP" for n in self.nodes})

    def stop_haproxy(self):
        if self.haproxy.poll() is None:
            self.haproxy.terminate()
            self.haproxy.wait(timeout=10)
        self.haproxy_log.close()

    def status(self):
        """{server: status} of backend chute, from HAProxy's stats socket."""
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(5)
        try:
            s.connect(self.stats)
            s.sendall(b"show stat\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        finally:
            s.close()
        lines = data.decode().splitlines()
        header = lines[0].lstrip("# ").split(",")
        out = {}
        for line in lines[1:]:
            row = dict(zip(header, line.split(",")))
            if row.get("pxname") == "chute" and row.get("svname", "").startswith("node"):
                out[row["svname"]] = row["status"]
        return out

    def wait_status(self, expected, deadline_s=20):
        end = time.monotonic() + deadline_s
        while True:
            try:
                got = self.status()
            except OSError as e:  # HAProxy is still starting
                got = e
            if self.haproxy.poll() is not None:
                with open(os.path.join(self.dir, "haproxy.log")) as f:
                    raise AssertionError("haproxy exited: " + f.read())
            if got == expected:
                return
            if time.monotonic() > end:
                raise AssertionError(f"HAProxy says {got}, expected {expected}")
            time.sleep(0.2)

    def connect(self, source):
        s = socket.socket()
        s.bind((source, 0))
        s.settimeout(10)
        s.connect(("127.0.0.1", self.haproxy_port))
        return s

    def test_the_101st_connection_from_one_address_gets_a_421(self):
        held = []
        for _ in range(100):
            s = self.connect("127.0.3.1")
            self.assertTrue(s.recv(1024).startswith(b"220 relay.example.test"))
            held.append(s)
        # chute sees the client itself (PROXY v2), spread over the nodes.
        counts = [n.metrics().get('chute_gate_ip_connections{ip="127.0.3.1"}', 0)
                  for n in self.nodes]
        self.assertEqual(sum(counts), 100)
        self.assertTrue(all(c > 0 for c in counts), counts)
        extra = self.connect("127.0.3.1")
        self.assertEqual(extra.recv(1024), REFUSAL)
        self.assertEqual(extra.recv(1024), b"")  # and closed, not reset
        extra.close()
        other = self.connect("127.0.3.2")
        self.assertTrue(other.recv(1024).startswith(b"220 "))
        other.close()
        held.pop().close()
        end = time.monotonic() + 10
        while True:
            again = self.connect("127.0.3.1")
            greeting = again.recv(1024)
            if greeting.startswith(b"220 ") or time.monotonic() > end:
                break
            again.close()  # HAProxy had not seen the close yet
            time.sleep(0.1)
        self.assertTrue(greeting.startswith(b"220 "), greeting)
        for s in held + [again]:
            s.close()

    def test_health_checks_pass_and_a_stopped_node_leaves_the_rotation(self):
        # The checks keep passing: no node logs a refused PROXY header or session.
        time.sleep(2.5)
        self.assertEqual(set(self.status().values()), {"UP"})
        for node in self.nodes:
            log = node.read_log()
            self.assertNotIn("proxy.refused", log)
            self.assertNotIn("PROXY header", log)
        self.nodes[2].stop()
        self.wait_status({"node1": "UP", "node2": "UP", "node3": "DOWN"})
        # Every new connection now reaches a node that answers.
        for i in range(20):
            s = self.connect("127.0.3.3")
            self.assertTrue(s.recv(1024).startswith(b"220 "), i)
            s.sendall(b"QUIT\r\n")
            s.close()
