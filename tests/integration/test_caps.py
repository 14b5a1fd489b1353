"""The connection caps against the real chuted (2 shards): 100 per client address, 250
authenticated sessions per tenant, counts read from the admin endpoint's /metrics, and every
abrupt way a client can vanish bringing them back to zero."""

import base64
import socket
import ssl
import struct
import time

from chute_fixture import APP_PASSWORD, ChutedFixture
from test_tls_auth import client_context


def connect_from(source, port):
    s = socket.socket()
    s.bind((source, 0))
    s.settimeout(10)
    s.connect(("127.0.0.1", port))
    return s


def rst_close(s):
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


class IpCapTest(ChutedFixture):
    def test_hundred_per_address_the_next_refused_others_unaffected(self):
        held = [connect_from("127.0.0.2", self.port) for _ in range(100)]
        for s in held:
            self.assertTrue(s.recv(1024).startswith(b"220 "))
        self.wait_metric('chute_gate_ip_connections{ip="127.0.0.2"}', 100)
        extra = connect_from("127.0.0.2", self.port)
        self.assertEqual(extra.recv(1024), b"421 4.7.0 Too many concurrent connections from this IP\r\n")
        self.assertEqual(extra.recv(1024), b"")
        extra.close()
        other = connect_from("127.0.0.3", self.port)
        self.assertTrue(other.recv(1024).startswith(b"220 "))
        other.close()
        held.pop().close()
        self.wait_metric('chute_gate_ip_connections{ip="127.0.0.2"}', 99)
        again = connect_from("127.0.0.2", self.port)
        self.assertTrue(again.recv(1024).startswith(b"220 "))
        held.append(again)
        self.assertEqual(self.metrics()['chute_gate_refused_total{reason="ip_cap"}'], 1)
        for s in held:
            s.close()
        self.wait_metric('chute_gate_ip_connections{ip="127.0.0.2"}', 0)

    def test_abrupt_endings_give_every_slot_back(self):
        port = self.port
        # RST right after the greeting.
        for _ in range(5):
            s = connect_from("127.0.0.4", port)
            s.recv(1024)
            rst_close(s)
        # Half-open: the client stops sending but keeps reading; QUIT never comes.
        half = connect_from("127.0.0.4", port)
        half.recv(1024)
        half.shutdown(socket.SHUT_WR)
        # Mid-DATA, then RST.
        s = connect_from("127.0.0.4", port)
        s.recv(1024)
        s.sendall(b"EHLO x\r\nMAIL FROM:<app@example.test>\r\nRCPT TO:<a@example.test>\r\nDATA\r\n"
                  b"Subject: cut\r\n\r\nhalf a mess")
        time.sleep(0.2)
        rst_close(s)
        self.wait_metric('chute_gate_ip_connections{ip="127.0.0.4"}', 0)
        half.close()
        self.assertEqual(self.messages("a@example.test"), [])


class TlsAbruptTest(ChutedFixture):
    with_tls = True

    def test_mid_handshake_and_after_auth_kills_give_slots_back(self):
        # A partial ClientHello, then RST.
        for _ in range(3):
            s = connect_from("127.0.0.5", self.smtps_port)
            s.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
            time.sleep(0.05)
            rst_close(s)
        # Authenticated, then RST: the tenant's count must drop too.
        raw = connect_from("127.0.0.5", self.tls_port)
        raw.recv(1024)
        raw.sendall(b"EHLO x\r\nSTARTTLS\r\n")
        data = b""
        while b"220 2.0.0" not in data:
            data += raw.recv(4096)
        tls = client_context().wrap_socket(raw)
        tls.sendall(b"EHLO x\r\nAUTH PLAIN " +
                    base64.b64encode(b"\0app@example.test\0" + APP_PASSWORD.encode()) + b"\r\n")
        data = b""
        while b"235 " not in data:
            data += tls.recv(4096)
        self.wait_metric('chute_gate_tenant_connections{tenant="example.test"}', 1)
        rst_close(tls)  # the TLS socket now owns the descriptor
        self.wait_metric('chute_gate_ip_connections{ip="127.0.0.5"}', 0)
        self.wait_metric('chute_gate_tenant_connections{tenant="example.test"}', 0)


class TenantCapTest(ChutedFixture):
    with_tls = True

    def auth(self, source, user, password):
        raw = connect_from(source, self.smtps_port)
        tls = client_context().wrap_socket(raw)
        f = tls.makefile("rb")
        f.readline()
        tls.sendall(b"EHLO x\r\nAUTH PLAIN " +
                    base64.b64encode(f"\0{user}\0{password}".encode()) + b"\r\n")
        while True:
            line = f.readline()
            if not line or line[3:4] == b" " and not line.startswith(b"250"):
                return tls, line

    def test_250_sessions_per_tenant_across_shards(self):
        self.ctl("tenant", "add", "fabrikam", "--domain", "fabrikam.test")
        self.ctl("account", "new", "--tenant", "fabrikam", "--name", "Fab",
                 "--primary-smtp-address", "fab@fabrikam.test", "--password-stdin", stdin="Fab-password-1")
        sessions = []
        for i in range(250):
            source = f"127.0.1.{1 + i % 4}"  # under the per-address cap
            tls, line = self.auth(source, "app@example.test", APP_PASSWORD)
            self.assertEqual(line, b"235 2.7.0 Authentication successful\r\n", i)
            sessions.append(tls)
        self.wait_metric('chute_gate_tenant_connections{tenant="example.test"}', 250)
        shards = [self.metrics().get(f'chute_connections_open{{shard="{i}"}}', 0) for i in (0, 1)]
        self.assertTrue(all(n > 0 for n in shards), f"both shards serve: {shards}")
        tls, line = self.auth("127.0.1.9", "app@example.test", APP_PASSWORD)
        self.assertEqual(line, b"454 4.7.0 Too many authenticated connections for this tenant, "
                               b"try again later\r\n")
        tls.sendall(b"MAIL FROM:<app@example.test>\r\n")  # still unauthenticated, still open
        self.assertEqual(tls.recv(1024), b"530 5.7.57 Client not authenticated to send mail\r\n")
        other, line = self.auth("127.0.1.9", "fab@fabrikam.test", "Fab-password-1")
        self.assertEqual(line, b"235 2.7.0 Authentication successful\r\n")
        sessions.pop().close()
        self.wait_metric('chute_gate_tenant_connections{tenant="example.test"}', 249)
        tls.sendall(b"AUTH PLAIN " + base64.b64encode(b"\0app@example.test\0" +
                                                      APP_PASSWORD.encode()) + b"\r\n")
        self.assertEqual(tls.recv(1024), b"235 2.7.0 Authentication successful\r\n")
        for s in sessions + [tls, other]:
            s.close()
        self.wait_metric('chute_gate_tenant_connections{tenant="example.test"}', 0)
        self.wait_metric('chute_gate_tenant_connections{tenant="fabrikam"}', 0)
