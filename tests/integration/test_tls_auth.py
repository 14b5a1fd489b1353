"""TLS and AUTH against the real chuted: STARTTLS and implicit TLS listeners, AUTH PLAIN and
LOGIN with python smtplib, swaks and curl, the STARTTLS injection probe, certificate reload."""

import base64
import os
import signal
import smtplib
import socket
import ssl
import subprocess
import time
import unittest
import warnings

from chute_fixture import APP_PASSWORD, CHUTED, ChutedFixture, make_certificate

MESSAGE = b"Subject: tls\r\n\r\nover TLS\r\n"


def client_context():
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the fixture's certificate is self-signed
    return context


class TlsAuthTest(ChutedFixture):
    with_tls = True

    def starttls(self):
        c = smtplib.SMTP("127.0.0.1", self.tls_port, timeout=30)
        c.ehlo("client.example.test")
        c.starttls(context=client_context())
        c.ehlo("client.example.test")
        return c

    def test_starttls_then_auth_plain_and_send(self):
        with self.starttls() as c:
            self.assertIn("auth", c.esmtp_features)
            self.assertNotIn("starttls", c.esmtp_features)
            c.login("app@example.test", APP_PASSWORD)
            self.assertEqual(c.sendmail("app@example.test", ["tls@example.test"], MESSAGE), {})
        text = self.messages("tls@example.test")[0]
        self.assertIn(b" with ESMTPSA id ", text)

    def test_reply_to_is_the_configured_one_exactly_once(self):
        self.ctl("settings", "set", "app@example.test", "--reply-to", "hr@example.test")
        self.proc.send_signal(signal.SIGHUP)
        body = (b"From: app@example.test\r\nReply-To: someone@else.test,\r\n\tother@else.test\r\n"
                b"Subject: r\r\nreply-to: again@else.test\r\n\r\nReply-To: in the body stays\r\n")
        deadline = time.monotonic() + 10
        n = 0
        while True:
            n += 1
            with self.starttls() as c:
                c.login("app@example.test", APP_PASSWORD)
                c.sendmail("app@example.test", [f"r{n}@example.test"], body)
            text = self.messages(f"r{n}@example.test")[0]
            if b"Reply-To: hr@example.test" in text:
                break
            self.assertLess(time.monotonic(), deadline, "the ReplyTo setting was not picked up")
            time.sleep(0.2)
        header, _, rest = text.partition(b"\r\n\r\n")
        self.assertEqual(header.lower().count(b"reply-to:"), 1, text)
        self.assertNotIn(b"else.test", header)
        self.assertIn(b"Subject: r", header)
        self.assertEqual(rest, b"Reply-To: in the body stays\r\n")

    def test_password_change_invalidates_the_cached_credential(self):
        with self.starttls() as c:
            c.login("app@example.test", APP_PASSWORD)  # now cached
        self.ctl("account", "password", "app@example.test", "--password-stdin", stdin="New one, 2nd")
        self.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while True:
            with self.starttls() as c:
                if c.docmd("AUTH", self.plain("app@example.test", APP_PASSWORD))[0] == 535:
                    break
            self.assertLess(time.monotonic(), deadline, "the old password still works")
            time.sleep(0.2)
        with self.starttls() as c:
            self.assertEqual(c.docmd("AUTH", self.plain("app@example.test", "New one, 2nd"))[0], 235)

    def test_large_messages_and_concurrent_senders_over_tls(self):
        import hashlib
        import threading
        big = b"Subject: big\r\n\r\n" + b"".join(
            b"%07d " % i + b"z" * 90 + b"\r\n" for i in range(50000))  # ~4.9 MB
        with self.starttls() as c:
            c.login("app@example.test", APP_PASSWORD)
            c.sendmail("app@example.test", ["big@example.test"], big)
        self.assertTrue(self.messages("big@example.test")[0].endswith(big))
        errors = []

        def sender(n):
            try:
                with self.starttls() as c:
                    c.login("app@example.test", APP_PASSWORD)
                    for i in range(10):
                        body = b"Subject: %d-%d\r\n\r\n" % (n, i) + (b"q" * 98 + b"\r\n") * 1000
                        c.sendmail("app@example.test", [f"load{n}@example.test"], body)
            except Exception as e:  # reported below
                errors.append(e)

        threads = [threading.Thread(target=sender, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(errors, [])
        for n in range(8):
            msgs = self.messages(f"load{n}@example.test")
            self.assertEqual(len(msgs), 10)
            digests = {hashlib.sha256(m.split(b"\r\n\r\n", 1)[1]).hexdigest() for m in msgs}
            self.assertEqual(len(digests), 1)  # every body intact

    def test_implicit_tls_with_auth_login(self):
        with smtplib.SMTP_SSL("127.0.0.1", self.smtps_port, timeout=30,
                              context=client_context()) as c:
            c.ehlo("client.example.test")
            self.assertNotIn("starttls", c.esmtp_features)
            c.user, c.password = "app@example.test", APP_PASSWORD
            code, _ = c.auth("LOGIN", c.auth_login, initial_response_ok=False)
            self.assertEqual(code, 235)
            c.sendmail("app@example.test", ["implicit@example.test"], MESSAGE)
        self.assertEqual(len(self.messages("implicit@example.test")), 1)

    def test_before_starttls_auth_and_mail_are_refused(self):
        with smtplib.SMTP("127.0.0.1", self.tls_port, timeout=30) as c:
            c.ehlo("client.example.test")
            self.assertNotIn("auth", c.esmtp_features)
            self.assertEqual(c.docmd("AUTH PLAIN AGFwcEBleGFtcGxlLnRlc3QAeA=="),
                             (530, b"5.7.0 Must issue a STARTTLS command first"))
            self.assertEqual(c.mail("app@example.test"),
                             (530, b"5.7.0 Must issue a STARTTLS command first"))

    def test_after_tls_mail_needs_auth(self):
        with self.starttls() as c:
            self.assertEqual(c.mail("app@example.test"),
                             (530, b"5.7.57 Client not authenticated to send mail"))

    @staticmethod
    def plain(user, password):
        return "PLAIN " + base64.b64encode(f"\0{user}\0{password}".encode()).decode()

    def test_wrong_password_and_unknown_user_get_the_same_reply(self):
        with self.starttls() as c:
            for user, password in (("app@example.test", "wrong"), ("nobody@example.test", "x")):
                self.assertEqual(c.docmd("AUTH", self.plain(user, password)),
                                 (535, b"5.7.3 Authentication unsuccessful"))

    def test_third_failure_closes_the_session(self):
        with self.starttls() as c:
            for _ in range(2):
                self.assertEqual(c.docmd("AUTH", self.plain("app@example.test", "wrong"))[0], 535)
            self.assertEqual(c.docmd("AUTH", self.plain("app@example.test", "wrong"))[0], 535)
            self.assertEqual(c.getreply(), (421, b"4.7.0 Too many errors"))

    def test_basic_auth_disabled_for_the_tenant(self):
        self.ctl("tenant", "set", "example.test", "--basic-auth", "off")
        self.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with self.starttls() as c:
                try:
                    c.login("app@example.test", APP_PASSWORD)
                except smtplib.SMTPAuthenticationError as e:
                    self.assertEqual(e.smtp_error, b"5.7.139 Authentication unsuccessful, "
                                                   b"basic authentication is disabled")
                    return
            time.sleep(0.2)
        self.fail("basic auth stayed on")

    def test_swaks_plain_and_login_with_pipelining(self):
        for mechanism in ("PLAIN", "LOGIN"):
            out = subprocess.run(
                ["swaks", "--server", f"127.0.0.1:{self.tls_port}", "-tls", "--pipeline",
                 "--auth", mechanism, "--auth-user", "app@example.test", "--auth-password",
                 APP_PASSWORD, "--from", "app@example.test", "--to", "swaks@example.test"],
                capture_output=True, text=True, timeout=60)
            self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        self.assertEqual(len(self.messages("swaks@example.test")), 2)

    def test_curl_ssl_reqd(self):
        path = os.path.join(self.dir, "mail.txt")
        with open(path, "wb") as f:
            f.write(b"Subject: curl\r\n\r\nfrom curl\r\n")
        out = subprocess.run(
            ["curl", "-sS", "--ssl-reqd", "-k", f"smtp://127.0.0.1:{self.tls_port}",
             "--user", f"app@example.test:{APP_PASSWORD}", "--mail-from", "app@example.test",
             "--mail-rcpt", "curl@example.test", "--upload-file", path],
            capture_output=True, text=True, timeout=60)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(len(self.messages("curl@example.test")), 1)

    def test_starttls_injection_probe(self):
        # CVE-2011-0411: a command sent with STARTTLS in the same packet must never be answered.
        raw = socket.create_connection(("127.0.0.1", self.tls_port), timeout=10)
        raw.recv(1024)
        raw.sendall(b"EHLO probe\r\n")
        data = b""
        while b"250 " not in data:
            data += raw.recv(4096)
        raw.sendall(b"STARTTLS\r\nRSET\r\n")
        self.assertEqual(raw.recv(1024), b"220 2.0.0 Ready to start TLS\r\n")
        tls = client_context().wrap_socket(raw)
        tls.settimeout(1.0)
        with self.assertRaises(socket.timeout):
            tls.recv(1024)  # no reply to the injected RSET, ever
        tls.settimeout(10)
        tls.sendall(b"NOOP\r\n")
        self.assertEqual(tls.recv(1024), b"250 2.0.0 OK\r\n")
        tls.close()

    def test_openssl_s_client_starttls(self):
        out = subprocess.run(
            ["openssl", "s_client", "-starttls", "smtp", "-connect", f"127.0.0.1:{self.tls_port}",
             "-quiet"], input="EHLO s-client\r\nQUIT\r\n", capture_output=True, text=True,
            timeout=30)
        self.assertIn("250 AUTH PLAIN LOGIN XOAUTH2", out.stdout)
        self.assertIn("221 2.0.0 Bye", out.stdout)

    def test_tls_1_1_is_refused(self):
        context = client_context()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                context.minimum_version = ssl.TLSVersion.TLSv1
                context.maximum_version = ssl.TLSVersion.TLSv1_1
        except (ValueError, AttributeError):
            self.skipTest("this Python cannot speak TLS 1.1")
        with socket.create_connection(("127.0.0.1", self.smtps_port), timeout=10) as raw:
            with self.assertRaises((ssl.SSLError, ConnectionError)):
                context.wrap_socket(raw).recv(1024)

    def test_garbage_instead_of_a_handshake_is_closed(self):
        with socket.create_connection(("127.0.0.1", self.smtps_port), timeout=10) as s:
            s.sendall(b"EHLO not-tls\r\n" * 10)
            data = b""
            try:
                while True:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    data += chunk
            except ConnectionResetError:
                pass
            self.assertNotIn(b"250", data)

    def test_sighup_reloads_the_certificate_and_keeps_it_on_bad_files(self):
        def peer_cn():
            with socket.create_connection(("127.0.0.1", self.smtps_port), timeout=10) as raw:
                context = client_context()
                with context.wrap_socket(raw) as tls:
                    der = tls.getpeercert(binary_form=True)
                    return b"renewed.example.test" in der
        self.assertFalse(peer_cn())
        new_dir = os.path.join(self.dir, "new")
        os.mkdir(new_dir)
        cert, key = make_certificate(new_dir, "renewed.example.test")
        os.replace(cert, self.cert)
        os.replace(key, self.key)
        self.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while not peer_cn():
            self.assertLess(time.monotonic(), deadline, "the new certificate was not loaded")
            time.sleep(0.2)
        with open(self.cert, "w") as f:
            f.write("not a certificate\n")
        self.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while "certificate reload failed" not in self.read_log():
            self.assertLess(time.monotonic(), deadline)
            time.sleep(0.1)
        self.assertTrue(peer_cn())  # the old (renewed) one stays in force


class PrivateKeyModeTest(ChutedFixture):
    """Issue 16, section 6: a private key every user could read loaded without a word. chuted
    now refuses one that every user may read or write (at start: exit 2; on SIGHUP: the
    running certificate stays), and warns about one its group may write, or read when the
    group is not one chuted runs with."""
    with_tls = True

    def wait_log(self, text, deadline_s=10):
        deadline = time.monotonic() + deadline_s
        while text not in self.read_log():
            self.assertLess(time.monotonic(), deadline, f"not in the log: {text}")
            time.sleep(0.1)

    def test_key_every_user_can_read_is_refused_at_start(self):
        self.proc.send_signal(signal.SIGTERM)
        self.assertEqual(self.proc.wait(timeout=40), 0)
        os.chmod(self.key, 0o644)
        result = subprocess.run([CHUTED, "--config", self.config], capture_output=True,
                                text=True, timeout=30)
        self.assertEqual(result.returncode, 2, result.stderr)
        self.assertIn(f"{self.key}: the private key is readable by every user (mode 0644)",
                      result.stderr)
        check = subprocess.run([CHUTED, "--config", self.config, "--check-config"],
                               capture_output=True, text=True, timeout=60)
        self.assertEqual(check.returncode, 2, check.stderr)
        self.assertIn("readable by every user (mode 0644)", check.stderr)

    def test_key_every_user_can_read_is_refused_on_reload_and_the_running_one_stays(self):
        os.chmod(self.key, 0o644)
        self.proc.send_signal(signal.SIGHUP)
        self.wait_log("certificate reload failed, keeping the current one: "
                      f"{self.key}: the private key is readable by every user (mode 0644)")
        with self.starttls_session() as c:
            self.assertEqual(c.noop()[0], 250)

    def test_key_readable_by_a_group_chuted_is_not_in_warns(self):
        try:
            os.chown(self.key, -1, 65534)  # nogroup; chuted here runs as root (gid 0)
        except PermissionError:
            self.skipTest("chgrp needs root")
        if 65534 in os.getgroups() or os.getegid() == 65534:
            self.skipTest("this process is in group 65534")
        os.chmod(self.key, 0o640)
        self.proc.send_signal(signal.SIGHUP)
        self.wait_log(f"{self.key}: the private key is readable by its group (mode 0640), "
                      "which is not a group chuted runs with")
        self.wait_log("certificate reloaded from")  # a warning, not a refusal

    def test_key_its_group_can_write_warns(self):
        os.chmod(self.key, 0o660)
        self.proc.send_signal(signal.SIGHUP)
        self.wait_log(f"{self.key}: the private key is writable by its group (mode 0660)")
        self.wait_log("certificate reloaded from")

    def starttls_session(self):
        c = smtplib.SMTP("127.0.0.1", self.tls_port, timeout=30)
        c.ehlo("client.example.test")
        c.starttls(context=client_context())
        c.ehlo("client.example.test")
        return c


class RsaCertificateTest(ChutedFixture):
    with_tls = True
    certificate_algorithm = "rsa"

    def test_starttls_with_an_rsa_certificate(self):
        with smtplib.SMTP("127.0.0.1", self.tls_port, timeout=30) as c:
            c.ehlo("client")
            c.starttls(context=client_context())
            c.ehlo("client")
            c.login("app@example.test", APP_PASSWORD)
            self.assertEqual(c.sendmail("app@example.test", ["rsa@example.test"], MESSAGE), {})


if __name__ == "__main__":
    unittest.main()
