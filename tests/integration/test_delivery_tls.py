"""Delivery over STARTTLS verifies the smarthost's certificate (issue 16, finding 4).

The test makes its own CA with the openssl command line tool, and certificates: one the CA
signed for the smarthost's name (mx.example.test), one it signed for the smarthost's address
(IP 127.0.0.1), one it signed for the wrong name (evil.invalid), and a self-signed one for
evil.invalid, the man in the middle's. The smarthost is StartTlsSmtp below: a small threaded
Python SMTP server with STARTTLS that records each message, whether it came over TLS, and the
SNI name the client sent.

Replayed: with tls = "required", chute delivered to the self-signed evil.invalid and logged
nothing (test_self_signed_certificate_is_refused_with_required_tls fails on that code).
"""

import base64
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import unittest

from chute_fixture import CHUTED
from test_delivery import DeliveryFixture, delivery_config, tags_in, wait_until

HOST = "127.0.0.1"
SERVER_NAME = "mx.example.test"


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def new_key(directory, name):
    path = os.path.join(directory, f"{name}.key")
    openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", path,
            cwd=directory)
    return path


def make_ca(directory):
    """A CA certificate and key: (ca.pem, ca.key)."""
    key = new_key(directory, "ca")
    cert = os.path.join(directory, "ca.pem")
    openssl("req", "-x509", "-new", "-key", key, "-days", "30", "-subj", "/CN=chute test CA",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign", "-out", cert, cwd=directory)
    return cert, key


def make_server_certificate(directory, name, san, ca):
    """A server certificate for subject CN=`name` with subjectAltName `san` (e.g.
    "DNS:mx.example.test"), signed by `ca` = (cert, key), or self-signed when `ca` is None.
    Returns (certificate, key)."""
    key = new_key(directory, name)
    cert = os.path.join(directory, f"{name}.pem")
    extensions = os.path.join(directory, f"{name}.ext")
    with open(extensions, "w") as f:
        f.write(f"basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n"
                f"extendedKeyUsage=serverAuth\nsubjectAltName={san}\n")
    if ca is None:
        openssl("req", "-x509", "-new", "-key", key, "-days", "30", "-subj", f"/CN={name}",
                "-addext", f"subjectAltName={san}", "-out", cert, cwd=directory)
        return cert, key
    csr = os.path.join(directory, f"{name}.csr")
    openssl("req", "-new", "-key", key, "-subj", f"/CN={name}", "-out", csr, cwd=directory)
    openssl("x509", "-req", "-in", csr, "-CA", ca[0], "-CAkey", ca[1], "-CAcreateserial",
            "-days", "30", "-extfile", extensions, "-out", cert, cwd=directory)
    return cert, key


def spki_pin(certificate):
    """"sha256/<base64>" of the certificate's public key (SubjectPublicKeyInfo, DER), computed
    with the openssl CLI as an operator would."""
    pubkey = subprocess.run(["openssl", "x509", "-in", certificate, "-pubkey", "-noout"],
                            check=True, capture_output=True).stdout
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "DER"], input=pubkey,
                         check=True, capture_output=True).stdout
    digest = subprocess.run(["openssl", "dgst", "-sha256", "-binary"], input=der, check=True,
                            capture_output=True).stdout
    return "sha256/" + base64.b64encode(digest).decode()


class StartTlsSmtp:
    """A threaded SMTP server offering STARTTLS with `certificate`/`key`.

    messages: (recipients, data, over_tls) per accepted message. sni: the server name each
    handshake's ClientHello carried (None without SNI). handshake_failures: handshakes that
    did not complete (the client refused the certificate)."""

    def __init__(self, certificate, key):
        self.lock = threading.Lock()
        self.messages = []
        self.sni = []
        self.handshake_failures = 0
        self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._context.load_cert_chain(certificate, key)
        self._context.sni_callback = self._on_sni
        self._stopping = threading.Event()
        self._threads = []
        self._conns = set()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((HOST, 0))
        self._listener.listen(16)
        self._listener.settimeout(0.1)
        self.port = self._listener.getsockname()[1]
        accept = threading.Thread(target=self._accept, daemon=True)
        accept.start()
        self._threads.append(accept)

    def _on_sni(self, _sslobj, server_name, _context):
        with self.lock:
            self.sni.append(server_name)

    def stop(self):
        self._stopping.set()
        self._listener.close()
        with self.lock:
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in self._threads:
            t.join(timeout=10)

    def tags(self):
        with self.lock:
            return [tag.decode() for _, data, _ in self.messages for tag in tags_in(data)]

    def _accept(self):
        while not self._stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            with self.lock:
                self._conns.add(conn)
                self._threads.append(t)
            t.start()

    def _serve(self, conn):
        sock = conn
        try:
            conn.settimeout(30)
            reader = sock.makefile("rb")
            sock.sendall(b"220 mx.example.test ESMTP\r\n")
            over_tls, rcpts = False, []
            while not self._stopping.is_set():
                line = reader.readline(4096)
                if not line:
                    return
                verb = line[:4].upper()
                if verb == b"EHLO":
                    sock.sendall(b"250-mx.example.test\r\n" +
                                 (b"" if over_tls else b"250-STARTTLS\r\n") +
                                 b"250 ENHANCEDSTATUSCODES\r\n")
                elif verb == b"STAR" and not over_tls:
                    sock.sendall(b"220 2.0.0 Ready to start TLS\r\n")
                    try:
                        sock = self._context.wrap_socket(conn, server_side=True)
                    except (ssl.SSLError, OSError):
                        with self.lock:
                            self.handshake_failures += 1
                        return
                    reader = sock.makefile("rb")
                    over_tls = True
                elif verb == b"MAIL":
                    rcpts = []
                    sock.sendall(b"250 2.1.0 Ok\r\n")
                elif verb == b"RCPT":
                    rcpts.append(line[8:].strip().decode().strip("<>"))
                    sock.sendall(b"250 2.1.5 Ok\r\n")
                elif verb == b"DATA":
                    sock.sendall(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                    data = b""
                    while True:
                        chunk = reader.readline(1 << 20)
                        if not chunk:
                            return
                        if chunk == b".\r\n":
                            break
                        data += chunk[1:] if chunk.startswith(b".") else chunk
                    with self.lock:
                        self.messages.append((rcpts, data, over_tls))
                    sock.sendall(b"250 2.0.0 Ok: queued\r\n")
                elif verb in (b"RSET", b"NOOP"):
                    sock.sendall(b"250 2.0.0 Ok\r\n")
                elif verb == b"QUIT":
                    sock.sendall(b"221 2.0.0 Bye\r\n")
                    return
                else:
                    sock.sendall(b"502 5.5.2 Error: command not recognized\r\n")
        except OSError:
            pass
        finally:
            with self.lock:
                self._conns.discard(conn)
            sock.close()


class Pki:
    """The certificates every test here uses, made once per class."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="chute-pki-")
        self.ca = make_ca(self.dir)
        self.right = make_server_certificate(self.dir, SERVER_NAME, f"DNS:{SERVER_NAME}", self.ca)
        self.ip = make_server_certificate(self.dir, "address", f"IP:{HOST}", self.ca)
        self.wrong = make_server_certificate(self.dir, "evil.invalid", "DNS:evil.invalid", self.ca)
        self.self_signed = make_server_certificate(self.dir, "self.evil.invalid",
                                                   "DNS:evil.invalid", None)

    def remove(self):
        shutil.rmtree(self.dir, ignore_errors=True)


class DeliveryTlsTest(DeliveryFixture):
    """Each test starts its smarthost and then chuted (start()) with its own [delivery]."""

    @classmethod
    def setUpClass(cls):
        cls.pki = Pki()

    @classmethod
    def tearDownClass(cls):
        cls.pki.remove()

    def setUp(self):
        pass  # start() runs ChutedFixture.setUp once the test has chosen its configuration

    def start(self, certificate, **delivery_keys):
        self.smarthost = StartTlsSmtp(*certificate)
        self.addCleanup(self.smarthost.stop)
        self.extra_config = delivery_config("smtp", f"{HOST}:{self.smarthost.port}",
                                            **delivery_keys)
        super().setUp()

    def pending_reply(self, queue_id):
        """The last reply of the message's first pending recipient, once it was tried."""
        entry = self.wait_attempted(queue_id)
        return entry["recipients_pending"][0]["last_reply"]

    def trace_replies(self, queue_id):
        rows = json.loads(self.ctl("--json", "trace", "--queue-id", queue_id).stdout)
        return [r.get("reply", "") for r in rows]

    def assert_refused(self, queue_id, *fragments):
        """The message stays queued with a 451 4.7.5 naming the verification failure, which
        the trace and the log hold too; the smarthost got nothing."""
        reply = self.pending_reply(queue_id)
        self.assertTrue(reply.startswith("451 4.7.5 "), reply)
        for fragment in fragments:
            self.assertIn(fragment, reply)
        self.assertEqual(self.smarthost.messages, [])
        self.assertEqual(self.queue("queue", "dead"), [])
        wait_until(lambda: any(fragments[0] in r for r in self.trace_replies(queue_id)),
                   "the reason in the message trace", 20)
        log = self.read_log()
        self.assertIn("event=delivery.tls", log)
        self.assertIn("result=refused", log)
        self.assertIn(fragments[0], log)
        return reply

    def test_certificate_from_the_ca_for_the_right_name_delivers(self):
        self.start(self.pki.right, tls="required", tls_ca_file=self.pki.ca[0],
                   tls_server_name=SERVER_NAME)
        self.send(["alice@example.test"], "right-1")
        wait_until(lambda: self.smarthost.tags() == ["right-1"], "the delivery", 30)
        self.settle(30)
        self.assertTrue(self.smarthost.messages[0][2], "delivered over TLS")
        self.assertEqual(self.smarthost.sni, [SERVER_NAME])
        log = self.read_log()
        self.assertRegex(log, r"event=delivery\.tls .*server_name=mx\.example\.test .*verified=yes")

    def test_an_address_target_matches_the_certificates_ip_address_and_sends_no_sni(self):
        self.start(self.pki.ip, tls="required", tls_ca_file=self.pki.ca[0])
        self.send(["alice@example.test"], "ip-1")
        wait_until(lambda: self.smarthost.tags() == ["ip-1"], "the delivery", 30)
        self.assertEqual(self.smarthost.sni, [None])  # RFC 6066: no IP literal in SNI

    def test_self_signed_certificate_is_refused_with_required_tls(self):
        # The finding as measured: only tls = "required", the system's CA store.
        self.start(self.pki.self_signed, tls="required")
        queue_id = self.send(["alice@example.test"], "mitm-1")
        self.assert_refused(queue_id, "certificate verify failed: self signed certificate",
                            "evil.invalid")
        self.assertGreaterEqual(self.smarthost.handshake_failures, 1)

    def test_self_signed_certificate_is_refused_even_with_a_ca_file(self):
        self.start(self.pki.self_signed, tls="required", tls_ca_file=self.pki.ca[0],
                   tls_server_name=SERVER_NAME)
        queue_id = self.send(["alice@example.test"], "mitm-2")
        self.assert_refused(queue_id, "certificate verify failed: self signed certificate")

    def test_certificate_from_the_ca_for_another_name_is_refused(self):
        self.start(self.pki.wrong, tls="required", tls_ca_file=self.pki.ca[0],
                   tls_server_name=SERVER_NAME)
        queue_id = self.send(["alice@example.test"], "wrong-1")
        self.assert_refused(
            queue_id, "name mismatch: certificate is for evil.invalid, expected mx.example.test")

    def test_certificate_for_a_name_does_not_match_the_target_address(self):
        self.start(self.pki.right, tls="required", tls_ca_file=self.pki.ca[0])
        queue_id = self.send(["alice@example.test"], "noname-1")
        self.assert_refused(
            queue_id, f"name mismatch: certificate is for {SERVER_NAME}, expected {HOST}")

    def test_matching_pin_delivers(self):
        self.start(self.pki.right, tls="required", tls_ca_file=self.pki.ca[0],
                   tls_server_name=SERVER_NAME,
                   tls_pins=[spki_pin(self.pki.ca[0]), spki_pin(self.pki.right[0])])
        self.send(["alice@example.test"], "pin-1")
        wait_until(lambda: self.smarthost.tags() == ["pin-1"], "the delivery", 30)

    def test_pin_mismatch_is_refused(self):
        self.start(self.pki.right, tls="required", tls_ca_file=self.pki.ca[0],
                   tls_server_name=SERVER_NAME, tls_pins=[spki_pin(self.pki.ca[0])])
        queue_id = self.send(["alice@example.test"], "pin-2")
        reply = self.assert_refused(queue_id, "public key pin mismatch")
        self.assertIn(spki_pin(self.pki.right[0]), reply)  # the key it did present

    def test_opportunistic_tls_delivers_despite_a_bad_certificate_and_logs_why(self):
        self.start(self.pki.self_signed, tls="opportunistic", tls_server_name=SERVER_NAME)
        self.send(["alice@example.test"], "opp-1")
        wait_until(lambda: self.smarthost.tags() == ["opp-1"], "the delivery", 30)
        self.assertTrue(self.smarthost.messages[0][2], "still encrypted")
        log = self.read_log()
        self.assertRegex(log, r"event=delivery\.tls .*verified=no .*reason=\"certificate verify "
                              r"failed: self signed certificate.*result=continued")

    def test_changed_verification_keys_need_a_restart(self):
        self.start(self.pki.right, tls="required", tls_ca_file=self.pki.ca[0],
                   tls_server_name=SERVER_NAME)
        with open(self.config) as f:
            text = f.read()
        with open(self.config, "w") as f:
            f.write(text.replace(f'tls_server_name = "{SERVER_NAME}"',
                                 'tls_server_name = "other.example.test"'))
        self.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "[delivery] changed; it takes effect after a restart"
                   in self.read_log(), "the reload's warning", 10)
        self.send(["alice@example.test"], "reload-1")  # still verified for the running name
        wait_until(lambda: self.smarthost.tags() == ["reload-1"], "the delivery", 30)


class DeliveryTlsConfigTest(unittest.TestCase):
    """What chuted says at start about the new keys (no chuted runs for long here)."""

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="chute-tlsconf-")
        self.addCleanup(shutil.rmtree, self.dir, True)

    def check(self, delivery):
        config = os.path.join(self.dir, "chute.toml")
        with open(config, "w") as f:
            f.write(f'[server]\ndata_dir = "{self.dir}"\n\n[[listener]]\n'
                    f'address = "127.0.0.1:1"\ntls = "none"\nallowed_networks = ["127.0.0.0/8"]\n'
                    f'authenticate_as = "app@example.test"\n\n[admin]\naddress = ""\n\n'
                    f'[delivery]\nbackend = "smtp"\ntarget = "127.0.0.1:25"\n{delivery}')
        return subprocess.run([CHUTED, "--config", config, "--check-config"],
                              capture_output=True, text=True, timeout=60)

    def test_unreadable_ca_file_is_a_start_up_error(self):
        missing = os.path.join(self.dir, "no-such-ca.pem")
        result = self.check(f'tls = "required"\ntls_ca_file = "{missing}"\n')
        self.assertEqual(result.returncode, 2, result.stderr)
        self.assertIn(f"[delivery] tls_ca_file {missing}: cannot read the CA certificates",
                      result.stderr)

    def test_ca_file_without_a_certificate_is_a_start_up_error(self):
        empty = os.path.join(self.dir, "empty.pem")
        with open(empty, "w") as f:
            f.write("not a certificate\n")
        result = self.check(f'tls = "opportunistic"\ntls_ca_file = "{empty}"\n')
        self.assertEqual(result.returncode, 2, result.stderr)
        self.assertIn(f"{empty}: holds no CA certificate", result.stderr)

    def test_bad_pin_is_a_configuration_error_naming_the_line(self):
        result = self.check('tls = "required"\ntls_pins = ["sha256/not-base64"]\n')
        self.assertEqual(result.returncode, 2, result.stderr)
        self.assertRegex(result.stderr, r"chute\.toml:\d+: delivery\.tls_pins: "
                                        r"\"sha256/not-base64\": after \"sha256/\"")

    def test_pins_without_required_tls_are_refused(self):
        pin = "sha256/" + base64.b64encode(bytes(32)).decode()
        result = self.check(f'tls = "opportunistic"\ntls_pins = ["{pin}"]\n')
        self.assertEqual(result.returncode, 2, result.stderr)
        self.assertIn('pins are enforced only with tls = "required"', result.stderr)

    def test_verification_keys_with_tls_off_are_refused(self):
        result = self.check(f'tls = "off"\ntls_server_name = "{SERVER_NAME}"\n')
        self.assertEqual(result.returncode, 2, result.stderr)
        self.assertIn("delivery.tls_server_name: tls = \"off\" verifies no certificate",
                      result.stderr)


if __name__ == "__main__":
    unittest.main()
