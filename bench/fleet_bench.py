#!/usr/bin/env python3
"""fleet_bench.py [MESSAGES]: what the fleet costs, measured against itself in one run.

1. AUTH latency (from AUTH PLAIN sent to 235 read, on a TLS session already up; the
   credential cache warm) on one chuted without [fleet] and on one with [fleet] redis (a real
   Redis on a unix socket): the Redis lease is one more round trip off the shard's loop.
   The two are measured alternately, 5 rounds of 200 AUTHs each.
2. Messages/s through HAProxy (deploy/haproxy/haproxy.cfg, PROXY v2) to one node, and to three
   nodes sharing Redis: MESSAGES (default 3000) 10 KB messages from 20 smtp-source sessions
   (trusted listener: each session takes its tenant place, a lease, at its first MAIL), Maildir
   delivery. On this machine's 2 cores three nodes cannot scale: the figure shows what the
   fleet adds (HAProxy, the leases, three processes sharing the cores), not what more machines
   would give.

Loopback only, every step bounded; prints, asserts nothing. Needs a release build
(tools/test.sh makes one), redis-server, haproxy and smtp-source (tools/install-deps.sh)."""

import base64
import os
import re
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "build", "bin")
DEPLOY = os.path.join(ROOT, "deploy", "haproxy")
MESSAGES = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
PASSWORD = "Bench password 1"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc):
    for _ in range(300):
        if proc.poll() is not None:
            raise SystemExit(f"process {proc.args[0]} exited")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


class Run:
    def __init__(self):
        self.work = tempfile.mkdtemp(prefix="chute-fleetbench-")
        self.procs = []
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-nodes", "-days", "2", "-subj",
                        "/CN=bench.example.test", "-keyout", f"{self.work}/key.pem", "-out",
                        f"{self.work}/cert.pem"], check=True, capture_output=True)
        self.directory = os.path.join(self.work, "directory.db")
        self.redis_sock = os.path.join(self.work, "redis.sock")

    def start(self, argv, port=None, **kwargs):
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                **kwargs)
        self.procs.append(proc)
        if port is not None:
            wait_port(port, proc)
        return proc

    def stop(self, proc):
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)

    def close(self):
        for proc in reversed(self.procs):
            try:
                self.stop(proc)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(self.work, ignore_errors=True)

    def redis(self):
        proc = self.start(["redis-server", "--port", "0", "--unixsocket", self.redis_sock,
                           "--save", "", "--appendonly", "no", "--dir", self.work])
        for _ in range(200):
            if os.path.exists(self.redis_sock):
                return proc
            time.sleep(0.02)
        raise SystemExit("redis-server did not start")

    def node(self, name, fleet, proxy=False):
        tls_port, plain_port = free_port(), free_port()
        data = os.path.join(self.work, name)
        os.makedirs(data)
        config = os.path.join(data, "chute.toml")
        proxy_keys = 'proxy_protocol = true\ntrusted_proxies = ["127.0.0.1/32"]' if proxy else ""
        with open(config, "w") as f:
            f.write(f"""[server]
shards = 1
data_dir = "{data}"
[[listener]]
address = "127.0.0.1:{tls_port}"
tls = "implicit"
[[listener]]
address = "127.0.0.1:{plain_port}"
tls = "none"
allowed_networks = ["127.0.0.0/8"]
authenticate_as = "app@example.test"
{proxy_keys}
[tls]
certificate = "{self.work}/cert.pem"
private_key = "{self.work}/key.pem"
[directory]
database = "{self.directory}"
[admin]
address = ""
""" + (f"""[fleet]
node_id = "{name}"
redis = "unix:{self.redis_sock}"
""" if fleet else ""))
        ctl = [os.path.join(BIN, "chutectl"), "--config", config]
        if not os.path.exists(self.directory):
            subprocess.run(ctl + ["tenant", "add", "bench", "--domain", "example.test"],
                           check=True, capture_output=True)
            subprocess.run(ctl + ["account", "new", "--tenant", "bench", "--name", "App",
                                  "--primary-smtp-address", "app@example.test",
                                  "--password-stdin"],
                           input=PASSWORD.encode(), check=True, capture_output=True)
        proc = self.start([os.path.join(BIN, "chuted"), "--config", config, "--log-level",
                           "warning"], plain_port)
        return proc, tls_port, plain_port, data

    def haproxy(self, plain_ports):
        port = free_port()
        with open(os.path.join(DEPLOY, "haproxy.cfg")) as f:
            text = f.read()
        servers = "".join(f"    server node{i + 1} 127.0.0.1:{p}\n"
                          for i, p in enumerate(plain_ports))
        for pattern, replacement in [
                (r"    log /dev/log local0\n", ""), (r"    log global\n", ""),
                (r"    option tcplog\n", ""), (r"    chroot .*\n", ""),
                (r"    user haproxy\n", ""), (r"    group haproxy\n", ""),
                (r"    daemon\n", ""), (r"    stats socket .*\n", ""),
                (r"lua-load \S+", f"lua-load {DEPLOY}/chute-421.lua"),
                (r"maxconn 200000", "maxconn 4000"),
                (r"    bind :587\n    bind :465\n", f"    bind 127.0.0.1:{port}\n"),
                (r" port 587", ""), (r"(    server node\d 10\.0\.0\.\d+\n)+", servers)]:
            text, count = re.subn(pattern, replacement, text)
            if count != 1:
                raise SystemExit(f"haproxy.cfg no longer has {pattern!r}")
        config = os.path.join(self.work, f"haproxy-{port}.cfg")
        with open(config, "w") as f:
            f.write(text)
        proc = self.start(["haproxy", "-db", "-f", config], port)
        time.sleep(2.5)  # the health checks mark the nodes up
        return proc, port


def auth_latencies(port, count=200):
    plain = base64.b64encode(f"\0app@example.test\0{PASSWORD}".encode())
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    out = []
    for _ in range(count):
        with socket.create_connection(("127.0.0.1", port), timeout=30) as raw:
            with context.wrap_socket(raw) as s:
                f = s.makefile("rb")
                f.readline()
                s.sendall(b"EHLO bench\r\n")
                while not f.readline().startswith(b"250 "):
                    pass
                start = time.perf_counter()
                s.sendall(b"AUTH PLAIN " + plain + b"\r\n")
                line = f.readline()
                out.append(time.perf_counter() - start)
                if not line.startswith(b"235 "):
                    raise SystemExit("AUTH failed: " + line.decode())
                s.sendall(b"QUIT\r\n")
    return out


def relay(port, data_dirs):
    start = time.monotonic()
    subprocess.run(["smtp-source", "-d", "-s", "20", "-m", str(MESSAGES), "-l", "10240", "-f",
                    "app@example.test", "-t", "bench@example.test", f"127.0.0.1:{port}"],
                   check=True, capture_output=True, timeout=600)
    # Delivered: every message in some node's Maildir.
    while time.monotonic() - start < 600:
        total = 0
        for data in data_dirs:
            new = os.path.join(data, "mail", "example.test", "bench", "new")
            total += len(os.listdir(new)) if os.path.isdir(new) else 0
        if total >= MESSAGES:
            break
        time.sleep(0.05)
    return MESSAGES / (time.monotonic() - start)


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))] * 1000


def main():
    run = Run()
    try:
        run.redis()
        alone, alone_tls, _, _ = run.node("alone", fleet=False)
        leased, leased_tls, _, _ = run.node("leased", fleet=True)
        plain, fleet = [], []
        for _ in range(5):
            plain += auth_latencies(alone_tls)
            fleet += auth_latencies(leased_tls)
        run.stop(alone)
        run.stop(leased)
        print(f"\nAUTH PLAIN -> 235 on a TLS session, credential cache warm, {len(plain)} each")
        print(f"  alone (in-process cap)        p50 {pct(plain, .5):6.3f} ms  "
              f"p99 {pct(plain, .99):6.3f} ms   1.00")
        print(f"  [fleet] redis lease           p50 {pct(fleet, .5):6.3f} ms  "
              f"p99 {pct(fleet, .99):6.3f} ms   "
              f"{statistics.median(fleet) / statistics.median(plain):.2f}")

        one, _, one_plain, one_data = run.node("one", fleet=True, proxy=True)
        haproxy_one, port_one = run.haproxy([one_plain])
        rate_one = relay(port_one, [one_data])
        run.stop(haproxy_one)
        run.stop(one)
        nodes = [run.node(f"n{i}", fleet=True, proxy=True) for i in range(3)]
        haproxy_three, port_three = run.haproxy([n[2] for n in nodes])
        rate_three = relay(port_three, [n[3] for n in nodes])
        print(f"\nRelayed through HAProxy (PROXY v2), {MESSAGES} x 10 KB, 20 sessions, Maildir, "
              f"{os.cpu_count()} cores")
        print(f"  one node                      {rate_one:8.0f} msg/s   1.00")
        print(f"  three nodes, one Redis        {rate_three:8.0f} msg/s   "
              f"{rate_three / rate_one:.2f}   (the same cores: overhead, not scale)")
    finally:
        run.close()


if __name__ == "__main__":
    main()
