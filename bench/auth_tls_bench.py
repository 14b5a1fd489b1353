#!/usr/bin/env python3
"""auth_tls_bench.py [SECONDS]: TLS and AUTH cost of chuted, against references measured in
the same run on the same machine.

1. TLS handshakes/s with an ECDSA P-256 certificate: `openssl s_time -new` against chuted's
   implicit-TLS listener (1 shard), and against `openssl s_server` with the same certificate.
2. Connections/s of a client that connects, does TLS, AUTH PLAIN and QUIT every time (an app
   that reconnects per message), with the credential cache on and off (auth_cache_entries).

Loopback only; each measurement is bounded by SECONDS (default 8). Prints; asserts nothing.
Needs a release build (tools/test.sh makes one)."""

import base64
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "build", "bin")
SECONDS = float(sys.argv[1]) if len(sys.argv) > 1 else 8.0
PASSWORD = "Bench password 1"  # satisfies the default password policy


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port):
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


def s_time(port):
    out = subprocess.run(["openssl", "s_time", "-connect", f"127.0.0.1:{port}", "-new", "-time",
                          str(int(SECONDS))], capture_output=True, text=True,
                         timeout=SECONDS + 30).stdout
    match = re.search(r"(\d+) connections in ([\d.]+)s", out)
    if not match:
        raise SystemExit("cannot read openssl s_time's output:\n" + out)
    return int(match.group(1)) / float(match.group(2))


def start_chuted(work, cache_entries):
    port = free_port()
    config = os.path.join(work, f"chute-{cache_entries}.toml")
    data = os.path.join(work, f"data-{cache_entries}")
    os.makedirs(data)
    with open(config, "w") as f:
        f.write(f"""[server]
shards = 1
data_dir = "{data}"
[[listener]]
address = "127.0.0.1:{port}"
tls = "implicit"
[tls]
certificate = "{work}/cert.pem"
private_key = "{work}/key.pem"
[limits]
auth_cache_entries = {cache_entries}
[admin]
address = ""
""")
    ctl = [os.path.join(BIN, "chutectl"), "--config", config]
    subprocess.run(ctl + ["tenant", "add", "bench", "--domain", "example.test"], check=True,
                   capture_output=True)
    subprocess.run(ctl + ["account", "new", "--tenant", "bench", "--name", "App",
                          "--primary-smtp-address", "app@example.test", "--password-stdin"],
                   input=PASSWORD.encode(), check=True, capture_output=True)
    proc = subprocess.Popen([os.path.join(BIN, "chuted"), "--config", config, "--log-level",
                             "warning"])
    wait_port(port)
    return proc, port


def auth_rate(port, clients=4):
    plain = base64.b64encode(f"\0app@example.test\0{PASSWORD}".encode()).decode()
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    done = [0]
    lock = threading.Lock()
    end = time.monotonic() + SECONDS

    def client():
        while time.monotonic() < end:
            with socket.create_connection(("127.0.0.1", port), timeout=30) as raw:
                with context.wrap_socket(raw) as s:
                    f = s.makefile("rb")
                    f.readline()
                    s.sendall(f"EHLO bench\r\nAUTH PLAIN {plain}\r\nQUIT\r\n".encode())
                    reply = b""
                    while b"221 " not in reply:
                        line = f.readline()
                        if not line:
                            break
                        reply += line
                    if b"235 " not in reply:
                        raise SystemExit("AUTH failed: " + reply.decode())
            with lock:
                done[0] += 1

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return done[0] / (time.monotonic() - start)


def main():
    work = tempfile.mkdtemp(prefix="chute-authbench-")
    procs = []
    try:
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-nodes", "-days", "2", "-subj",
                        "/CN=bench.example.test", "-keyout", f"{work}/key.pem", "-out",
                        f"{work}/cert.pem"], check=True, capture_output=True)
        ref_port = free_port()
        server = subprocess.Popen(["openssl", "s_server", "-quiet", "-accept", str(ref_port),
                                   "-cert", f"{work}/cert.pem", "-key", f"{work}/key.pem",
                                   "-naccept", "1000000"], stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(server)
        wait_port(ref_port)
        reference = s_time(ref_port)
        server.terminate()
        server.wait()
        cached, cached_port = start_chuted(work, 16384)
        procs.append(cached)
        chute_tls = s_time(cached_port)
        with_cache = auth_rate(cached_port)
        uncached, uncached_port = start_chuted(work, 0)
        procs.append(uncached)
        without_cache = auth_rate(uncached_port)
        print(f"\nTLS handshakes/s (openssl s_time -new, ECDSA P-256, {os.cpu_count()} cores)")
        print(f"  openssl s_server (reference)        {reference:9.0f}   1.00")
        print(f"  chuted, 1 shard, implicit TLS        {chute_tls:9.0f}   {chute_tls / reference:.2f}")
        print("Connections/s doing TLS + AUTH PLAIN + QUIT each (4 Python clients)")
        print(f"  credential cache off (argon2id each) {without_cache:9.1f}   1.00")
        print(f"  credential cache on                  {with_cache:9.1f}   "
              f"{with_cache / without_cache:.2f}")
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=40)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
