"""Integration tests: the real chuted on loopback, real clients (smtplib, swaks,
smtp-source), real Maildir files."""

import os
import re
import signal
import smtplib
import socket
import subprocess
import threading
import time
import unittest

from chute_fixture import CHUTED, ChutedFixture, free_port

SIMPLE = b"Subject: hello\r\n\r\nbody line\r\n"


def smtp(fixture):
    client = smtplib.SMTP("127.0.0.1", fixture.port, timeout=30)
    client.ehlo("client.example.test")
    return client


def raw_session(port, payload, read_until=b"221", timeout=10):
    """Sends payload bytes in one write and returns everything the server said."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.recv(1024)  # greeting
        s.sendall(payload)
        data = b""
        end = time.monotonic() + timeout
        while read_until not in data and time.monotonic() < end:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        return data


class DeliveryTest(ChutedFixture):
    def test_message_lands_once_with_added_headers(self):
        with smtp(self) as c:
            refused = c.sendmail("app@example.test", ["bob@example.test"], SIMPLE)
            self.assertEqual(refused, {})
        msgs = self.messages("bob@example.test")
        self.assertEqual(len(msgs), 1)
        text = msgs[0]
        self.assertTrue(text.startswith(b"Received: from client.example.test ([127.0.0.1])\r\n"
                                        b"\tby relay.example.test (chute) with ESMTP id "), text)
        self.assertRegex(text, rb"\r\nDate: \w{3}, \d{2} \w{3} \d{4} \d{2}:\d{2}:\d{2} \+0000\r\n")
        self.assertRegex(text, rb"\r\nMessage-ID: <[0-9A-F]+@relay\.example\.test>\r\n")
        self.assertTrue(text.endswith(b"Subject: hello\r\n\r\nbody line\r\n"))

    def test_existing_date_and_message_id_are_kept_not_doubled(self):
        body = (b"Date: Mon, 02 Nov 2026 10:00:00 +0000\r\nMessage-ID: <mine@app.test>\r\n"
                b"Subject: x\r\n\r\nhi\r\n")
        with smtp(self) as c:
            c.sendmail("app@example.test", ["carol@example.test"], body)
        text = self.messages("carol@example.test")[0]
        self.assertEqual(text.count(b"Date:"), 1)
        self.assertEqual(text.lower().count(b"message-id:"), 1)
        self.assertIn(b"<mine@app.test>", text)

    def test_many_recipients_each_get_one_copy_and_duplicates_collapse(self):
        rcpts = [f"user{i}@example.test" for i in range(10)] + ["User0@Example.Test".lower()]
        with smtp(self) as c:
            c.sendmail("app@example.test", rcpts + ["user1@corp.test"], SIMPLE)
        for i in range(10):
            self.assertEqual(len(self.messages(f"user{i}@example.test")), 1, i)
        self.assertEqual(len(self.messages("user1@corp.test")), 1)

    def test_alias_may_send_and_postmaster_is_the_tenants(self):
        with smtp(self) as c:
            c.sendmail("Alias@Example.Test", ["postmaster"], SIMPLE)
        self.assertEqual(len(self.messages("postmaster@example.test")), 1)

    def test_local_part_preserved_and_dots_unstuffed(self):
        with smtp(self) as c:
            c.sendmail("app@example.test", ["First.Last@example.test"],
                       b"Subject: d\r\n\r\n.leading dot\r\n..two\r\n")
        msgs = self.messages("First.Last@example.test")
        self.assertEqual(len(msgs), 1)
        self.assertTrue(msgs[0].endswith(b"\r\n.leading dot\r\n..two\r\n"), msgs[0])

    def test_a_body_of_dotted_lines_arrives_intact(self):
        # Every stuffed dot splits the body; past a bound the pieces go to the arena.
        body = b"Subject: dots\r\n\r\n" + b"".join(b".line %d\r\n" % i for i in range(20000))
        with smtp(self) as c:
            c.sendmail("app@example.test", ["dots@example.test"], body)
        self.assertTrue(self.messages("dots@example.test")[0].endswith(body[body.index(b"Subject"):]))

    def test_bdat(self):
        reply = raw_session(self.port, b"EHLO c\r\nMAIL FROM:<app@example.test>\r\n"
                            b"RCPT TO:<bdat@example.test>\r\nBDAT 12\r\nSubject: b\r\nBDAT 6 LAST\r\n"
                            b"\r\nhi\r\nQUIT\r\n")
        self.assertIn(b"250 2.0.0 12 octets received", reply)
        self.assertRegex(reply, rb"250 2\.0\.0 OK queued as [0-9A-F]{23}")
        self.assertTrue(self.messages("bdat@example.test")[0].endswith(b"Subject: b\r\n\r\nhi\r\n"))

    def test_large_bdat_chunks(self):
        body = b"Subject: chunks\r\n\r\n" + b"".join(b"%08d" % i + b"c" * 90 + b"\r\n"
                                                   for i in range(30000))  # ~3 MB
        first, second = body[:2_000_001], body[2_000_001:]
        payload = (b"EHLO c\r\nMAIL FROM:<app@example.test>\r\nRCPT TO:<chunks@example.test>\r\n"
                   b"BDAT %d\r\n" % len(first) + first +
                   b"BDAT %d LAST\r\n" % len(second) + second + b"QUIT\r\n")
        reply = raw_session(self.port, payload, timeout=60)
        self.assertIn(b"250 2.0.0 %d octets received" % len(first), reply)
        self.assertRegex(reply, rb"250 2\.0\.0 OK queued as [0-9A-F]{23}")
        self.assertTrue(self.messages("chunks@example.test")[0].endswith(body))

    def test_smtputf8_message_is_received_with_utf8smtp(self):
        # RFC 6531: the Received "with" is UTF8SMTP(S)(A) for an SMTPUTF8 transaction.
        with smtplib.SMTP("127.0.0.1", self.port, timeout=30) as c:
            c.ehlo("client")
            c.sendmail("app@example.test", ["utf8@example.test"],
                       "Subject: caf\u00e9\r\n\r\nhi\r\n".encode(),
                       mail_options=["SMTPUTF8"])
            c.sendmail("app@example.test", ["utf8@example.test"], b"Subject: plain\r\n\r\nhi\r\n")
        texts = sorted(self.messages("utf8@example.test"), key=lambda m: b"plain" in m)
        self.assertIn(b" with UTF8SMTP id ", texts[0])
        self.assertIn(b" with ESMTP id ", texts[1])

    def test_lookalike_domain_is_filed_under_its_a_label(self):
        # corp.test in fullwidth letters, and with a fullwidth full stop (U+FF0E): UTS #46
        # maps both onto corp.test, which accepts them; the copies must land in corp.test's
        # mailboxes, not in folders named after the raw spelling.
        fullwidth = "\uff43\uff4f\uff52\uff50.test"
        with smtplib.SMTP("127.0.0.1", self.port, timeout=30) as c:
            c.ehlo("client")
            c.sendmail("app@\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45.test",
                       [f"bob@{fullwidth}"], b"Subject: one\r\n\r\nhi\r\n",
                       mail_options=["SMTPUTF8"])
            c.sendmail("app@example.test", ["carol@corp\uff0etest", "Dave@CORP.test"],
                       b"Subject: two\r\n\r\nhi\r\n", mail_options=["SMTPUTF8"])
        self.settle()
        self.assertEqual(sorted(os.listdir(os.path.join(self.dir, "mail"))), ["corp.test"])
        bob = self.messages("bob@corp.test")
        self.assertEqual(len(bob), 1)
        self.assertIn(b"\tfor <bob@corp.test>", bob[0])  # Received: names the A-label too
        self.assertEqual(len(self.messages("carol@corp.test")), 1)
        self.assertEqual(len(self.messages("dave@corp.test")), 1)
        log = self.read_log()
        self.assertIn("sender=app@example.test", log)
        self.assertNotIn("\uff45\uff58", log.split("event=message.accepted", 1)[1])

    def test_message_to_50_recipients_takes_the_disk_of_one_copy(self):
        # Was: a 2 MB message to 50 recipients took 101 MB in the Maildir, a file per
        # recipient. Now its copies are hard links of one file.
        line = b"x" * 98 + b"\r\n"
        body = b"Subject: big\r\n\r\n" + line * (2 * 1024 * 1024 // len(line))
        recipients = [f"r{i:02d}@example.test" for i in range(50)]
        with smtplib.SMTP("127.0.0.1", self.port, timeout=60) as c:
            c.ehlo("client")
            c.sendmail("app@example.test", recipients, body)
        self.settle()
        inodes = {}
        for r in recipients:
            new = os.path.join(self.maildir(r), "new")
            names = os.listdir(new)
            self.assertEqual(len(names), 1, r)
            st = os.lstat(os.path.join(new, names[0]))
            inodes[st.st_ino] = st
            with open(os.path.join(new, names[0]), "rb") as f:
                self.assertTrue(f.read().endswith(body), r)
        self.assertEqual(len(inodes), 1, "one file for the 50 copies")
        (st,) = inodes.values()
        self.assertEqual(st.st_nlink, 50)
        used = sum(s.st_blocks * 512 for s in inodes.values())
        self.assertLess(used, 3 * 1024 * 1024, f"{used} bytes on disk for a 2 MB message")

    def test_swaks_pipelining(self):
        out = subprocess.run(["swaks", "--server", f"127.0.0.1:{self.port}", "--pipeline",
                              "--from", "app@example.test", "--to", "dave@example.test",
                              "--header", "Subject: swaks"], capture_output=True, text=True,
                             timeout=60)
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        self.assertEqual(len(self.messages("dave@example.test")), 1)

    def test_smtp_source_many_sessions(self):
        count = 400
        out = subprocess.run(["/usr/sbin/smtp-source", "-d", "-s", "20", "-m", str(count), "-l",
                              "2048", "-f", "app@example.test", "-t", "load@example.test",
                              f"127.0.0.1:{self.port}"], capture_output=True, text=True,
                             timeout=120)
        self.assertEqual(out.returncode, 0, out.stderr)
        msgs = self.messages("load@example.test")
        self.assertEqual(len(msgs), count)
        self.assertEqual(len({m.split(b" id ", 1)[1][:23] for m in msgs}), count)


class UsageTest(ChutedFixture):
    def test_usage_is_counted_per_account_per_utc_day(self):
        with smtp(self) as c:
            for _ in range(3):
                c.sendmail("app@example.test", ["u1@example.test", "u2@example.test"], SIMPLE)
            c.mail("app@example.test")
            c.rcpt("u3@example.test")
            c.data(b"bare\nline\r\n")  # refused: not counted
        self.proc.send_signal(signal.SIGTERM)
        self.assertEqual(self.proc.wait(timeout=40), 0)
        import sqlite3
        db = sqlite3.connect(os.path.join(self.dir, "directory.db"))
        rows = db.execute("SELECT address, tenant, day, messages, recipients FROM usage").fetchall()
        day = time.strftime("%Y-%m-%d", time.gmtime())
        self.assertEqual(rows, [("app@example.test", "example.test", day, 3, 6)])


class RejectionTest(ChutedFixture):
    def test_header_from_must_be_the_accounts_address_or_alias(self):
        # HVE: 550 5.6.241 after the end of data when From: is someone else.
        with smtplib.SMTP("127.0.0.1", self.port, timeout=30) as c:
            c.ehlo("client")
            with self.assertRaises(smtplib.SMTPDataError) as refused:
                c.sendmail("app@example.test", ["fromcheck@example.test"],
                           b"From: CEO <ceo@example.test>\r\nSubject: x\r\n\r\nhi\r\n")
            self.assertEqual(refused.exception.smtp_code, 550)
            self.assertIn(b"5.6.241", refused.exception.smtp_error)
            c.sendmail("app@example.test", ["fromcheck@example.test"],
                       b"From: \"The App\" <Alias@Example.test>\r\nSubject: y\r\n\r\nhi\r\n")
        messages = self.messages("fromcheck@example.test")
        self.assertEqual(len(messages), 1)
        self.assertIn(b"Subject: y", messages[0])

    def test_sender_must_be_the_account(self):
        with smtp(self) as c:
            code, msg = c.mail("someone@example.test")
            self.assertEqual((code, msg),
                             (550, b"5.7.60 Client does not have permissions to send as this sender"))

    def test_recipient_outside_accepted_domains(self):
        with smtp(self) as c:
            c.mail("app@example.test")
            self.assertEqual(c.rcpt("x@elsewhere.test"),
                             (550, b"5.7.54 Unable to relay recipient in non-accepted domain"))

    def test_recipient_is_an_hve_account(self):
        with smtp(self) as c:
            c.mail("app@example.test")
            self.assertEqual(c.rcpt("HVE2@example.test"),
                             (550, b"5.1.10 Recipient not found: HVE accounts have no mailbox"))

    def test_fifty_first_recipient(self):
        with smtp(self) as c:
            c.mail("app@example.test")
            for i in range(50):
                self.assertEqual(c.rcpt(f"r{i}@example.test")[0], 250)
            self.assertEqual(c.rcpt("r50@example.test"), (452, b"4.5.3 Too many recipients"))
            code, _ = c.data(SIMPLE)
            self.assertEqual(code, 250)
        self.assertEqual(len(self.messages("r49@example.test")), 1)

    def test_size_parameter_and_body_over_ten_megabytes(self):
        with smtp(self) as c:
            self.assertEqual(c.mail("app@example.test", ["SIZE=10485761"])[0], 552)
            c.mail("app@example.test")
            c.rcpt("big@example.test")
            line = b"x" * 998 + b"\r\n"
            body = b"Subject: big\r\n\r\n" + line * (10485760 // 1000 + 1)
            code, msg = c.data(body)
            self.assertEqual((code, msg),
                             (552, b"5.3.4 Message size exceeds fixed maximum message size"))
            self.assertEqual(c.noop()[0], 250)
        self.assertEqual(self.messages("big@example.test"), [])

    def test_bare_lf_smuggling_is_refused_and_nothing_is_delivered(self):
        reply = raw_session(self.port, b"EHLO c\r\nMAIL FROM:<app@example.test>\r\n"
                            b"RCPT TO:<victim@example.test>\r\nDATA\r\nSubject: a\r\n\r\nhi\n.\n"
                            b"MAIL FROM:<app@example.test>\r\nRCPT TO:<smuggled@example.test>\r\n"
                            b"DATA\r\nx\r\n.\r\nQUIT\r\n")
        self.assertIn(b"550 5.5.2 Bare line feed or carriage return not allowed", reply)
        self.assertEqual(self.messages("victim@example.test"), [])
        self.assertEqual(self.messages("smuggled@example.test"), [])

    def test_http_request_is_closed(self):
        reply = raw_session(self.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", read_until=b"\n")
        self.assertTrue(reply.startswith(b"421 4.7.0"), reply)


class TrustedNetworkTest(ChutedFixture):
    allowed_networks = '["127.0.0.2/32"]'

    def test_peer_outside_allowed_networks_is_refused(self):
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as s:
            data = s.recv(1024)
            self.assertEqual(data, b"554 5.7.1 Your address may not use this listener\r\n")
            self.assertEqual(s.recv(1024), b"")  # and closed


class LimitsTest(ChutedFixture):
    shards = 1
    extra_limits = "command_timeout_s = 1\nconnections_max = 3\nconnections_per_ip = 3\n"

    def test_idle_session_times_out(self):
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as s:
            s.recv(1024)
            start = time.monotonic()
            data = s.recv(1024)
            self.assertEqual(data, b"421 4.4.2 Timeout exceeded\r\n")
            self.assertLess(time.monotonic() - start, 8)

    def test_connections_max(self):
        held = [socket.create_connection(("127.0.0.1", self.port), timeout=10) for _ in range(2)]
        try:
            for s in held:
                self.assertTrue(s.recv(1024).startswith(b"220 "))
            # The fixture's readiness probe has gone; two are held, a third fits, a fourth not.
            third = socket.create_connection(("127.0.0.1", self.port), timeout=10)
            held.append(third)
            self.assertTrue(third.recv(1024).startswith(b"220 "))
            with socket.create_connection(("127.0.0.1", self.port), timeout=10) as fourth:
                self.assertEqual(fourth.recv(1024),
                                 b"421 4.7.0 Too many connections, try again later\r\n")
        finally:
            for s in held:
                s.close()


class SlowReaderTest(ChutedFixture):
    shards = 1
    extra_limits = "command_timeout_s = 2\n"

    def server_side_established(self):
        out = subprocess.run(["ss", "-Htn", "state", "established", f"( sport = :{self.port} )"],
                             capture_output=True, text=True).stdout
        return len(out.strip().splitlines())

    def test_a_peer_that_never_reads_is_disconnected(self):
        # Without the send timeout the 421 could never be sent, and the connection would stay.
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", self.port))
        s.setblocking(False)
        end = time.monotonic() + 0.5
        while time.monotonic() < end:  # pipeline NOOPs and never read a single reply
            try:
                s.send(b"NOOP\r\n" * 1000)
            except BlockingIOError:
                time.sleep(0.05)
        self.assertEqual(self.server_side_established(), 1)
        deadline = time.monotonic() + 15
        while self.server_side_established() > 0:
            self.assertLess(time.monotonic(), deadline, "the server kept a peer that never reads")
            time.sleep(0.2)
        s.close()


class DirectoryReloadTest(ChutedFixture):
    def test_new_account_becomes_an_hve_recipient_after_sighup(self):
        with smtp(self) as c:
            c.mail("app@example.test")
            self.assertEqual(c.rcpt("newbie@example.test")[0], 250)
        self.ctl("account", "new", "--tenant", "example.test", "--name", "Newbie",
                 "--primary-smtp-address", "newbie@example.test", "--no-password")
        self.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with smtp(self) as c:
                c.mail("app@example.test")
                if c.rcpt("newbie@example.test")[0] == 550:
                    return
            time.sleep(0.2)
        self.fail("the new account was not picked up")


class ConfigReloadTest(ChutedFixture):
    def wait_log(self, text):
        deadline = time.monotonic() + 10
        while text not in self.read_log():
            self.assertLess(time.monotonic(), deadline, f"no '{text}' in the log")
            time.sleep(0.1)

    def test_sighup_applies_live_keys_and_names_the_others(self):
        with open(self.config) as f:
            original = f.read()
        changed = (original.replace('hostname = "relay.example.test"', 'hostname = "new.example.test"')
                   .replace("shards = 2", "shards = 1")
                   .replace("[limits]\n",
                            "[limits]\nrecipients_per_message = 3\nconnections_per_ip = 2\n"))
        with open(self.config, "w") as f:
            f.write(changed)
        self.proc.send_signal(signal.SIGHUP)
        self.wait_log("configuration reloaded")
        self.assertIn("server.shards changed; it takes effect after a restart", self.read_log())
        with smtplib.SMTP("127.0.0.1", self.port, timeout=30) as c:
            code, text = c.ehlo("client")
            self.assertTrue(text.startswith(b"new.example.test"), text)
            c.mail("app@example.test")
            for i in range(3):
                self.assertEqual(c.rcpt(f"r{i}@example.test")[0], 250)
            self.assertEqual(c.rcpt("r3@example.test"), (452, b"4.5.3 Too many recipients"))
        self.wait_metric('chute_gate_ip_connections{ip="127.0.0.1"}', 0)
        held = [socket.create_connection(("127.0.0.1", self.port), timeout=10) for _ in range(3)]
        replies = [s.recv(1024) for s in held]
        self.assertEqual(sum(r.startswith(b"220 ") for r in replies), 2)  # the new per-IP cap
        self.assertIn(b"421 4.7.0 Too many concurrent connections from this IP\r\n", replies)
        for s in held:
            s.close()
        self.wait_metric('chute_gate_ip_connections{ip="127.0.0.1"}', 0)
        with open(self.config, "w") as f:
            f.write(changed + "\n[bogus]\n")
        self.proc.send_signal(signal.SIGHUP)
        self.wait_log("configuration reload failed, keeping the running one")
        with smtplib.SMTP("127.0.0.1", self.port, timeout=30) as c:
            self.assertTrue(c.ehlo("client")[1].startswith(b"new.example.test"))

    def test_reload_option_sends_the_sighup(self):
        # The unit's ExecReload= (chuted --reload $MAINPID): no /bin/kill needed.
        done = subprocess.run([CHUTED, "--reload", str(self.proc.pid)], capture_output=True,
                              text=True, timeout=30)
        self.assertEqual(done.returncode, 0, done.stderr)
        self.wait_log("configuration reloaded")
        self.assertIsNone(self.proc.poll())
        for bad in ("0", "1", "x"):
            done = subprocess.run([CHUTED, "--reload", bad], capture_output=True, text=True,
                                  timeout=30)
            self.assertEqual(done.returncode, 1, bad)
            self.assertIn("is not the process id of a chuted", done.stderr)


class GracefulStopTest(ChutedFixture):
    def test_sigterm_under_load_loses_nothing_that_got_250(self):
        accepted = []
        lock = threading.Lock()
        stop = threading.Event()

        def sender(n):
            while not stop.is_set():
                try:
                    with smtplib.SMTP("127.0.0.1", self.port, timeout=30) as c:
                        c.ehlo("load")
                        for i in range(20):
                            c.mail("app@example.test")
                            c.rcpt(f"load{n}@example.test")
                            code, msg = c.data(b"Subject: load\r\n\r\n" + (b"y" * 78 + b"\r\n") * 50)
                            if code == 250:
                                with lock:
                                    accepted.append((n, msg.split()[-1].decode()))
                except (OSError, smtplib.SMTPException):
                    return

        threads = [threading.Thread(target=sender, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        time.sleep(1.0)
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=40)
        stop.set()
        for t in threads:
            t.join(timeout=30)
        self.assertEqual(code, 0, self.read_log())
        self.assertGreater(len(accepted), 0)
        for n, message_id in accepted:
            names = os.listdir(os.path.join(self.maildir(f"load{n}@example.test"), "new"))
            self.assertTrue(any(message_id in name for name in names), message_id)


class CommandLineTest(unittest.TestCase):
    def run_chuted(self, *args):
        return subprocess.run([CHUTED, *args], capture_output=True, text=True, timeout=30)

    def test_help_and_usage_errors(self):
        out = self.run_chuted("--help")
        self.assertEqual(out.returncode, 0)
        self.assertIn("--config FILE", out.stdout)
        self.assertEqual(self.run_chuted("--bogus").returncode, 1)

    def test_bad_config_names_file_line_and_key(self):
        import tempfile
        with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
            f.write("[limits]\nrecipients_per_message = 0\n")
        try:
            out = self.run_chuted("--config", f.name, "--check-config")
            self.assertEqual(out.returncode, 2)
            self.assertIn(f"{f.name}:2: limits.recipients_per_message: 0 is out of range", out.stderr)
        finally:
            os.unlink(f.name)

    def test_check_config_checks_what_the_configuration_refers_to(self):
        import tempfile
        d = tempfile.mkdtemp(prefix="chute-it-")
        config = os.path.join(d, "c.toml")
        with open(config, "w") as f:
            f.write(f'[server]\ndata_dir = "{d}"\n[[listener]]\naddress = "127.0.0.1:2"\n'
                    f'[tls]\ncertificate = "{d}/missing.pem"\nprivate_key = "{d}/key.pem"\n')
        out = self.run_chuted("--config", config, "--check-config")
        self.assertEqual(out.returncode, 2)
        self.assertIn("missing.pem: cannot load the certificate chain", out.stderr)
        with open(config, "w") as f:
            f.write(f'[server]\ndata_dir = "{d}"\n[[listener]]\naddress = "127.0.0.1:2"\n'
                    'tls = "none"\nallowed_networks = ["127.0.0.0/8"]\n'
                    'authenticate_as = "app@example.test"\n')
        out = self.run_chuted("--config", config, "--check-config")
        self.assertEqual(out.returncode, 2)
        self.assertIn("directory.db cannot be opened", out.stderr)
        ctl = [os.path.join(os.path.dirname(CHUTED), "chutectl"), "--config", config]
        subprocess.run(ctl + ["tenant", "add", "t", "--domain", "example.test"], check=True,
                       capture_output=True)
        out = self.run_chuted("--config", config, "--check-config")
        self.assertEqual(out.returncode, 2)
        self.assertIn("authenticate_as app@example.test is not an account", out.stderr)
        subprocess.run(ctl + ["account", "new", "--name", "App", "--primary-smtp-address",
                              "app@example.test", "--no-password"], check=True, capture_output=True)
        out = self.run_chuted("--config", config, "--check-config")
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn(": OK", out.stdout)

    def test_trusted_listener_without_account_refuses_to_start(self):
        import tempfile
        d = tempfile.mkdtemp(prefix="chute-it-")
        config = os.path.join(d, "c.toml")
        with open(config, "w") as f:
            f.write(f'[server]\ndata_dir = "{d}"\n[[listener]]\naddress = "127.0.0.1:{free_port()}"\n'
                    'tls = "none"\nallowed_networks = ["127.0.0.0/8"]\n'
                    'authenticate_as = "ghost@example.test"\n')
        out = self.run_chuted("--config", config)
        self.assertEqual(out.returncode, 2)
        self.assertIn("ghost@example.test is not an account in the directory", out.stdout + out.stderr)
        with open(config, "w") as f:
            f.write(f'[server]\ndata_dir = "{d}"\n[[listener]]\naddress = "127.0.0.1:2"\n'
                    'tls = "none"\n')
        out = self.run_chuted("--config", config, "--check-config")
        self.assertEqual(out.returncode, 2)
        self.assertIn("needs allowed_networks", out.stderr)


if __name__ == "__main__":
    unittest.main()
