"""PROXY protocol v1 and v2 against the real chuted: only trusted proxies may send the header;
the client address it carries is what the per-IP cap, allowed_networks and Received: see."""

import socket
import struct
import time
import unittest

from chute_fixture import ChutedFixture, free_port
from test_caps import connect_from

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def v2_header(source, source_port=40000, destination="127.0.0.1", destination_port=25):
    body = (socket.inet_aton(source) + socket.inet_aton(destination) +
            struct.pack("!HH", source_port, destination_port))
    return V2_SIGNATURE + bytes([0x21, 0x11]) + struct.pack("!H", len(body)) + body


def v2_header_ipv6(source):
    body = (socket.inet_pton(socket.AF_INET6, source) + socket.inet_pton(socket.AF_INET6, "::1") +
            struct.pack("!HH", 40000, 25))
    return V2_SIGNATURE + bytes([0x21, 0x21]) + struct.pack("!H", len(body)) + body


class ProxyFixture(ChutedFixture):
    """A second trusted listener behind a PROXY-speaking proxy on 127.0.0.1."""
    allowed_networks = '["127.0.0.1/32", "192.0.2.0/24", "2001:db8::/32"]'

    def setUp(self):
        self.proxy_port = free_port()
        super().setUp()

    def extra_listeners(self):
        return f"""
[[listener]]
address = "127.0.0.1:{self.proxy_port}"
tls = "none"
allowed_networks = ["192.0.2.0/24", "2001:db8::/32"]
authenticate_as = "app@example.test"
proxy_protocol = true
trusted_proxies = ["127.0.0.1/32"]
"""

    def session(self, header, source="127.0.0.1"):
        s = connect_from(source, self.proxy_port)
        s.sendall(header)
        return s


class ProxyProtocolTest(ProxyFixture):
    def test_v1_client_address_is_used_for_caps_and_received(self):
        s = self.session(b"PROXY TCP4 192.0.2.7 127.0.0.1 40000 25\r\n")
        f = s.makefile("rb")
        self.assertTrue(f.readline().startswith(b"220 "))
        self.wait_metric('chute_gate_ip_connections{ip="192.0.2.7"}', 1)
        s.sendall(b"EHLO proxied\r\nMAIL FROM:<app@example.test>\r\nRCPT TO:<p@example.test>\r\n"
                  b"DATA\r\nSubject: p\r\n\r\nhi\r\n.\r\nQUIT\r\n")
        data = b""
        while b"221 " not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        s.close()
        self.assertIn(b"Received: from proxied ([192.0.2.7])", self.messages("p@example.test")[0])

    def test_v2_ipv4_and_ipv6(self):
        s = self.session(v2_header("192.0.2.8"))
        self.assertTrue(s.recv(1024).startswith(b"220 "))
        self.wait_metric('chute_gate_ip_connections{ip="192.0.2.8"}', 1)
        s.close()
        s6 = self.session(v2_header_ipv6("2001:db8::5"))
        self.assertTrue(s6.recv(1024).startswith(b"220 "))
        s6.close()

    def test_allowed_networks_apply_to_the_carried_address(self):
        s = self.session(b"PROXY TCP4 198.51.100.1 127.0.0.1 40000 25\r\n")
        self.assertEqual(s.recv(1024), b"554 5.7.1 Your address may not use this listener\r\n")
        s.close()

    def test_untrusted_peer_is_closed_without_a_banner(self):
        s = connect_from("127.0.0.2", self.proxy_port)
        s.sendall(b"PROXY TCP4 192.0.2.7 127.0.0.1 40000 25\r\n")
        self.assertEqual(s.recv(1024), b"")
        s.close()

    def test_no_banner_before_the_header_and_malformed_headers_close(self):
        s = connect_from("127.0.0.1", self.proxy_port)
        s.settimeout(0.5)
        with self.assertRaises(socket.timeout):
            s.recv(1024)  # nothing is said before the header
        s.settimeout(10)
        s.sendall(b"EHLO not-a-proxy-header\r\n")
        self.assertEqual(s.recv(1024), b"")
        s.close()
        for bad in (b"PROXY TCP4 300.1.1.1 127.0.0.1 1 2\r\n", b"PROXY TCP4 192.0.2.1\r\n",
                    V2_SIGNATURE + bytes([0x31, 0x11, 0, 12]) + b"\0" * 12):
            s = self.session(bad)
            self.assertEqual(s.recv(1024), b"", bad)
            s.close()

    def test_per_ip_cap_counts_the_carried_address(self):
        held = []
        for _ in range(100):
            s = self.session(b"PROXY TCP4 192.0.2.50 127.0.0.1 40000 25\r\n")
            self.assertTrue(s.recv(1024).startswith(b"220 "))
            held.append(s)
        s = self.session(b"PROXY TCP4 192.0.2.50 127.0.0.1 40000 25\r\n")
        self.assertEqual(s.recv(1024), b"421 4.7.0 Too many concurrent connections from this IP\r\n")
        s.close()
        other = self.session(b"PROXY TCP4 192.0.2.51 127.0.0.1 40000 25\r\n")
        self.assertTrue(other.recv(1024).startswith(b"220 "))
        other.close()
        for h in held:
            h.close()
        self.wait_metric('chute_gate_ip_connections{ip="192.0.2.50"}', 0)

    def test_per_ip_cap_counts_an_ipv6_64_as_one_client(self):
        # Was: each IPv6 address had its own count, so one /64 opened 100 connections per
        # address. Now the default connections_per_ip_ipv6_prefix_bits = 64 counts the /64.
        held = []
        for i in range(100):  # 100 different addresses of one /64
            s = self.session(v2_header_ipv6(f"2001:db8:1:2::{i + 1:x}"))
            self.assertTrue(s.recv(1024).startswith(b"220 "), i)
            held.append(s)
        s = self.session(v2_header_ipv6("2001:db8:1:2:dead:beef:0:1"))
        self.assertEqual(s.recv(1024), b"421 4.7.0 Too many concurrent connections from this IP\r\n")
        s.close()
        other = self.session(v2_header_ipv6("2001:db8:1:3::1"))  # the next /64
        self.assertTrue(other.recv(1024).startswith(b"220 "))
        other.close()
        for h in held:
            h.close()
        self.wait_metric('chute_gate_refused_total{reason="ip_cap"}', 1)


class ProxyIpv6PrefixTest(ProxyFixture):
    """connections_per_ip_ipv6_prefix_bits = 128: each IPv6 address counts alone again."""
    extra_limits = "connections_per_ip = 2\nconnections_per_ip_ipv6_prefix_bits = 128"

    def test_prefix_128_counts_each_ipv6_address_alone(self):
        held = [self.session(v2_header_ipv6("2001:db8:1:2::1")) for _ in range(2)]
        for s in held:
            self.assertTrue(s.recv(1024).startswith(b"220 "))
        s = self.session(v2_header_ipv6("2001:db8:1:2::1"))
        self.assertEqual(s.recv(1024), b"421 4.7.0 Too many concurrent connections from this IP\r\n")
        s.close()
        neighbour = self.session(v2_header_ipv6("2001:db8:1:2::2"))
        self.assertTrue(neighbour.recv(1024).startswith(b"220 "))
        neighbour.close()
        for h in held:
            h.close()


if __name__ == "__main__":
    unittest.main()
