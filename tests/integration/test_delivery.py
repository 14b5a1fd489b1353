"""Delivery to LMTP and SMTP downstreams, retries, the dead-letter area and queue control.

Every downstream is real or a small fake written here, on 127.0.0.1 with free ports:
- a private Dovecot (dovecot -F with its own configuration, users and Maildirs in a temp dir)
  for LMTP, with some recipients it does not know;
- Postfix's smtp-sink, dumping each transaction to a file;
- FakeSmtp: a threaded Python SMTP server that records every message and can be told to
  refuse (5xx) or defer (4xx) recipients, for retries, dead letters and queue control;
- a private Postfix instance (postfix -c DIR, its own queue directory) relaying to FakeSmtp.

Each message carries a unique X-Tag header; "delivered exactly once" means each tag reaches the
downstream once. Every process a test starts is stopped by a cleanup, also when it fails.
"""

import calendar
import json
import os
import pwd
import re
import shutil
import signal
import smtplib
import socket
import subprocess
import tempfile
import threading
import time
import unittest

from chute_fixture import CHUTED, ChutedFixture, free_port, wait_for_port

DOVECOT = "/usr/sbin/dovecot"
SMTP_SINK = "/usr/sbin/smtp-sink"
POSTFIX = "/usr/sbin/postfix"
HERE = os.path.dirname(os.path.abspath(__file__))
UNKNOWN_ID = "0123456789ABCDEF0123456"  # 23 hex chars, never issued in these tests
QUEUED_AS = re.compile(rb"queued as ([0-9A-Fa-f]{23})\b")


def wait_until(predicate, what, deadline_s=30.0, interval_s=0.1):
    """Polls predicate() until it returns a true value (returned), or fails naming `what`."""
    end = time.monotonic() + deadline_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {deadline_s} s waiting for {what}")
        time.sleep(interval_s)


def wait_for_greeting(port, deadline_s=15.0):
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                if s.recv(512).startswith(b"220"):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"nothing greets on 127.0.0.1:{port}")


def stop_process(proc, timeout_s=20):
    """SIGTERM, then SIGKILL; never leaves `proc` running."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def message_body(tag, size_lines=3):
    return (f"Subject: {tag}\r\nX-Tag: {tag}\r\n\r\n".encode()
            + b"".join(f"line {i} of {tag}\r\n".encode() for i in range(size_lines))
            + b".a line that starts with a dot\r\n")


def tags_in(data):
    return re.findall(rb"^X-Tag: (\S+)", data, re.M)


class FakeSmtp:
    """A small threaded SMTP server: PIPELINING, 8BITMIME, ENHANCEDSTATUSCODES, DATA only.

    reject: address (lower case) -> 5xx reply at RCPT; defer_all: a 4xx reply for every RCPT
    when set. messages: every accepted message as (sender, [recipients], data). rcpts_seen:
    every RCPT address in order, whatever the answer. Change the attributes under `lock`."""

    def __init__(self, port=0):
        self.lock = threading.Lock()
        self.reject = {}
        self.defer_all = None
        self.messages = []
        self.rcpts_seen = []
        self.sessions = 0
        self._stopping = threading.Event()
        self._conns = set()
        self._threads = []
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", port))
        self._listener.listen(128)
        self._listener.settimeout(0.1)
        self.port = self._listener.getsockname()[1]
        accept = threading.Thread(target=self._accept, daemon=True)
        accept.start()
        self._threads.append(accept)

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
            return [tag.decode() for _, _, data in self.messages for tag in tags_in(data)]

    def deliveries(self):
        """(tag, recipient) for every recipient of every accepted message."""
        with self.lock:
            return [(tag.decode(), r) for _, rcpts, data in self.messages
                    for tag in tags_in(data) for r in rcpts]

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
                self.sessions += 1
                self._threads.append(t)
            t.start()

    def _serve(self, conn):
        try:
            conn.settimeout(60)
            reader = conn.makefile("rb")
            conn.sendall(b"220 fake.test ESMTP\r\n")
            sender, rcpts = None, []
            while not self._stopping.is_set():
                line = reader.readline(4096)
                if not line:
                    return
                verb = line[:4].upper()
                if verb in (b"EHLO", b"LHLO"):
                    conn.sendall(b"250-fake.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n"
                                 b"250 ENHANCEDSTATUSCODES\r\n")
                elif verb == b"HELO":
                    conn.sendall(b"250 fake.test\r\n")
                elif verb == b"MAIL":
                    sender, rcpts = line[10:].strip().decode(), []
                    conn.sendall(b"250 2.1.0 Ok\r\n")
                elif verb == b"RCPT":
                    address = line[8:].strip().decode().strip("<>")
                    with self.lock:
                        self.rcpts_seen.append(address)
                        reply = self.defer_all or self.reject.get(address.lower())
                    if reply is None:
                        rcpts.append(address)
                        reply = "250 2.1.5 Ok"
                    conn.sendall(reply.encode() + b"\r\n")
                elif verb == b"DATA":
                    if sender is None or not rcpts:
                        conn.sendall(b"554 5.5.1 Error: no valid recipients\r\n")
                        continue
                    conn.sendall(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                    data = b""
                    while True:
                        chunk = reader.readline(1 << 20)
                        if not chunk:
                            return
                        if chunk == b".\r\n":
                            break
                        data += chunk[1:] if chunk.startswith(b".") else chunk
                    with self.lock:
                        self.messages.append((sender, rcpts, data))
                        n = len(self.messages)
                    conn.sendall(f"250 2.0.0 Ok: queued as FAKE{n}\r\n".encode())
                    sender, rcpts = None, []
                elif verb == b"RSET":
                    sender, rcpts = None, []
                    conn.sendall(b"250 2.0.0 Ok\r\n")
                elif verb == b"NOOP":
                    conn.sendall(b"250 2.0.0 Ok\r\n")
                elif verb == b"QUIT":
                    conn.sendall(b"221 2.0.0 Bye\r\n")
                    return
                else:
                    conn.sendall(b"502 5.5.2 Error: command not recognized\r\n")
        except OSError:
            pass
        finally:
            with self.lock:
                self._conns.discard(conn)
            conn.close()


def toml_lines(keys):
    """`key = value` lines for a TOML table (Python values: str, bool, int, list of str)."""
    lines = []
    for key, value in keys.items():
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, str):
            value = f'"{value}"'
        elif isinstance(value, (list, tuple)):
            value = "[" + ", ".join(f'"{v}"' for v in value) + "]"
        lines.append(f"{key} = {value}")
    return lines


def delivery_config(backend, target, **keys):
    """A [delivery] table; keys override the defaults below (Python values, TOML-quoted)."""
    settings = {"tls": "off", "retry_initial_s": 1, "retry_max_s": 2, "timeout_s": 10,
                "connections_max": 4, "connection_idle_s": 5, **keys}
    lines = ["[delivery]", f'backend = "{backend}"', f'target = "{target}"']
    return "\n".join(lines + toml_lines(settings)) + "\n"


class DeliveryFixture(ChutedFixture):
    """ChutedFixture plus helpers to send tagged messages and read the queue."""

    def send(self, recipients, tag, message_id=None):
        """Submits one message (with that Message-ID: when given); returns its queue id from the
        250 reply."""
        body = message_body(tag)
        if message_id is not None:
            body = f"Message-ID: {message_id}\r\n".encode() + body
        with smtplib.SMTP("127.0.0.1", self.port, timeout=30) as c:
            c.ehlo("client.example.test")
            code, reply = c.mail("app@example.test")
            self.assertEqual(code, 250, reply)
            for r in recipients:
                code, reply = c.rcpt(r)
                self.assertEqual(code, 250, (r, reply))
            code, reply = c.data(body)
            self.assertEqual(code, 250, reply)
            match = QUEUED_AS.search(reply)
            self.assertIsNotNone(match, reply)
            return match.group(1).decode()

    def queue(self, *words, check=True):
        """`chutectl --json WORDS...` parsed (the queue commands and their Postfix spellings)."""
        result = self.ctl("--json", *words, check=check)
        return json.loads(result.stdout)

    def queue_entry(self, queue_id):
        for entry in self.queue("queue", "list"):
            if entry["id"] == queue_id:
                return entry
        return None

    def wait_attempted(self, queue_id, attempts=1, deadline_s=30):
        """Waits until the message has been tried `attempts` times and is not in flight."""
        def done():
            entry = self.queue_entry(queue_id)
            self.assertIsNotNone(entry, f"{queue_id} left the queue")
            return (entry if entry["attempts"] >= attempts and not entry["in_flight"]
                    else None)
        return wait_until(done, f"{queue_id} to be attempted {attempts} time(s)", deadline_s)

    def metric_sum(self, prefix):
        """The sum of every series of a metric, whatever its labels."""
        return sum(v for k, v in self.metrics().items()
                   if k == prefix or k.startswith(prefix + "{"))


# -------------------------------------------------------------------------------------------
# 1. LMTP to a real Dovecot.

DOVECOT_USERS = [f"user{i:02d}@example.test" for i in range(35)]
DOVECOT_UNKNOWN = [f"ghost{i:02d}@example.test" for i in range(15)]


def start_dovecot(test):
    """A private Dovecot LMTP server in a temp dir; returns (port, maildir root)."""
    if not os.path.exists(DOVECOT):
        test.skipTest("dovecot is not installed (Debian: dovecot-lmtpd)")
    try:
        owner = pwd.getpwnam("dovecot")  # mail is stored as this user: Dovecot refuses uid 0
    except KeyError:
        test.skipTest("the system has no dovecot user")
    home = tempfile.mkdtemp(prefix="chute-dovecot-")
    test.addCleanup(shutil.rmtree, home, True)
    os.chmod(home, 0o755)  # the lmtp process, running as `dovecot`, must reach mail/
    mail = os.path.join(home, "mail")
    os.mkdir(mail)
    os.chown(mail, owner.pw_uid, owner.pw_gid)
    users = os.path.join(home, "users")
    with open(users, "w") as f:
        for address in DOVECOT_USERS:
            f.write(f"{address}::{owner.pw_uid}:{owner.pw_gid}::{home}/home/{address}::\n")
    port = free_port()
    conf = os.path.join(home, "dovecot.conf")
    with open(conf, "w") as f:
        f.write(f"""
base_dir = {home}/run
state_dir = {home}/state
log_path = {home}/dovecot.log
protocols = lmtp
ssl = no
listen = 127.0.0.1
first_valid_uid = 1
mail_location = maildir:{mail}/%d/%n
passdb {{
  driver = passwd-file
  args = {users}
}}
userdb {{
  driver = passwd-file
  args = {users}
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {port}
  }}
}}
""")
    os.mkdir(os.path.join(home, "run"))
    os.mkdir(os.path.join(home, "state"))
    out = open(os.path.join(home, "dovecot.stdout"), "w")
    test.addCleanup(out.close)
    proc = subprocess.Popen([DOVECOT, "-F", "-c", conf], stdout=out, stderr=subprocess.STDOUT)
    test.addCleanup(stop_process, proc)
    try:
        wait_for_greeting(port)
    except RuntimeError:
        with open(os.path.join(home, "dovecot.stdout")) as f1:
            raise AssertionError("dovecot did not start:\n" + f1.read())
    test.dovecot_log = os.path.join(home, "dovecot.log")
    return port, mail


class LmtpToDovecotTest(DeliveryFixture):
    def setUp(self):
        self.lmtp_port, self.dovecot_mail = start_dovecot(self)
        self.extra_config = delivery_config("lmtp", f"127.0.0.1:{self.lmtp_port}")
        super().setUp()

    def dovecot_messages(self, address):
        local, domain = address.split("@")
        new = os.path.join(self.dovecot_mail, domain, local, "new")
        if not os.path.isdir(new):
            return []
        out = []
        for name in os.listdir(new):
            with open(os.path.join(new, name), "rb") as f:
                out.append(f.read())
        return out

    def test_known_recipients_land_in_dovecot_unknown_ones_are_dead_with_its_reply(self):
        recipients = []
        for i in range(max(len(DOVECOT_USERS), len(DOVECOT_UNKNOWN))):  # interleaved
            recipients += DOVECOT_USERS[i:i + 1] + DOVECOT_UNKNOWN[i:i + 1]
        self.assertEqual(len(recipients), 50)
        queue_id = self.send(recipients, "lmtp-50")
        self.settle(60)
        for address in DOVECOT_USERS:
            got = self.dovecot_messages(address)
            self.assertEqual(len(got), 1, f"{address} has {len(got)} messages in Dovecot")
            self.assertEqual(tags_in(got[0]), [b"lmtp-50"], address)
            self.assertIn(b"\n.a line that starts with a dot", got[0])  # unstuffed once
            self.assertNotIn(b"\n..a line", got[0])
        for address in DOVECOT_UNKNOWN:
            self.assertEqual(self.dovecot_messages(address), [], address)
        dead = self.queue("queue", "dead")
        self.assertEqual([d["id"] for d in dead], [queue_id], dead)
        reasons = {r["address"]: r["reply"] for r in dead[0]["recipients"]}
        self.assertEqual(sorted(reasons), sorted(DOVECOT_UNKNOWN))
        for address, reply in reasons.items():
            self.assertTrue(reply.startswith("550 5.1.1"), (address, reply))
            self.assertIn("User doesn't exist", reply)  # Dovecot's own words
            self.assertIn(address, reply)
        self.assertEqual(dead[0]["sender"], "app@example.test")
        self.assertGreaterEqual(dead[0]["attempts"], 1)
        self.assertIn("dead_at", dead[0])
        eml = os.path.join(self.dir, "dead", queue_id + ".eml")
        with open(eml, "rb") as f:
            self.assertEqual(tags_in(f.read()), [b"lmtp-50"])
        self.assertTrue(os.path.exists(os.path.join(self.dir, "dead", queue_id + ".json")))
        metrics = self.metrics()
        backend = f'{{route="default",backend="lmtp",target="127.0.0.1:{self.lmtp_port}"}}'
        self.assertEqual(metrics["chute_delivery_recipients_delivered_total" + backend],
                         len(DOVECOT_USERS))
        self.assertEqual(metrics["chute_delivery_recipients_dead_total" + backend],
                         len(DOVECOT_UNKNOWN))
        self.assertEqual(self.queue("queue", "list"), [])

    def test_many_messages_over_a_persistent_connection(self):
        ids = [self.send([DOVECOT_USERS[i % 5]], f"many-{i}") for i in range(30)]
        self.assertEqual(len(set(ids)), 30)
        self.settle(60)
        seen = []
        for address in DOVECOT_USERS[:5]:
            for data in self.dovecot_messages(address):
                seen += [t.decode() for t in tags_in(data)]
        self.assertEqual(sorted(seen), sorted(f"many-{i}" for i in range(30)))
        self.assertEqual(self.queue("queue", "dead"), [])


# -------------------------------------------------------------------------------------------
# 2. SMTP to Postfix's smtp-sink.

class SmtpToSmtpSinkTest(DeliveryFixture):
    def setUp(self):
        if not os.path.exists(SMTP_SINK):
            self.skipTest("smtp-sink is not installed (Debian: postfix)")
        self.sink_port = free_port()
        self.sink_dir = tempfile.mkdtemp(prefix="chute-sink-")
        self.addCleanup(shutil.rmtree, self.sink_dir, True)
        os.chmod(self.sink_dir, 0o755)  # smtp-sink drops root: it must reach dumps/
        dumps = os.path.join(self.sink_dir, "dumps")
        os.mkdir(dumps)
        user = "postfix" if os.getuid() == 0 else pwd.getpwuid(os.getuid()).pw_name
        owner = pwd.getpwnam(user)
        os.chown(dumps, owner.pw_uid, owner.pw_gid)
        self.dumps = dumps
        options = ["-u", user] if os.getuid() == 0 else []
        self.sink_out = open(os.path.join(self.sink_dir, "out"), "w")
        self.addCleanup(self.sink_out.close)
        sink = subprocess.Popen([SMTP_SINK, *options, "-c", "-d", f"{dumps}/msg.",
                                 f"127.0.0.1:{self.sink_port}", "100"],
                                stdout=self.sink_out, stderr=subprocess.STDOUT)
        self.addCleanup(stop_process, sink)
        wait_for_greeting(self.sink_port)
        self.extra_config = delivery_config("smtp", f"127.0.0.1:{self.sink_port}",
                                            batch_messages_max=8)
        super().setUp()

    def dumped(self):
        out = []
        for name in sorted(os.listdir(self.dumps)):
            with open(os.path.join(self.dumps, name), "rb") as f:
                out.append(f.read())
        return out

    def test_messages_reach_smtp_sink_once_and_the_spool_empties(self):
        expected = {}
        for i in range(12):
            recipients = [f"sink{i}-{k}@example.test" for k in range(1 + i % 3)]
            self.send(recipients, f"sink-{i}")
            expected[f"sink-{i}"] = recipients
        self.settle(60)
        self.assertEqual(self.metrics()["chute_spool_messages"], 0)
        dumps = self.dumped()
        got = {}
        for data in dumps:
            tags = tags_in(data)
            self.assertEqual(len(tags), 1, data[:500])
            tag = tags[0].decode()
            self.assertNotIn(tag, got, f"{tag} reached smtp-sink twice")
            got[tag] = [r.decode() for r in re.findall(rb"^X-Rcpt-Args: <([^>]+)>", data, re.M)]
            self.assertIn(b"X-Mail-Args: <app@example.test>", data)
            self.assertIn(b"\n.a line that starts with a dot", data)
        self.assertEqual(got, expected)
        self.assertEqual(self.metric_sum("chute_delivery_recipients_delivered_total"),
                         sum(len(r) for r in expected.values()))
        self.assertEqual(self.metric_sum("chute_delivery_recipients_dead_total"), 0)
        self.assertEqual(self.queue("queue", "list"), [])


# -------------------------------------------------------------------------------------------
# 3. The downstream is down, then up.

class DownstreamDownThenUpTest(DeliveryFixture):
    def setUp(self):
        self.down_port = free_port()  # nothing listens here until the test starts FakeSmtp
        self.extra_config = delivery_config("smtp", f"127.0.0.1:{self.down_port}",
                                            retry_initial_s=1, retry_max_s=2)
        super().setUp()

    def test_messages_wait_with_451_then_each_is_delivered_exactly_once(self):
        ids = {}
        for i in range(20):
            ids[self.send([f"later{i}@example.test"], f"later-{i}")] = f"later-{i}"
        self.assertEqual(len(ids), 20)

        def all_deferred():
            entries = self.queue("queue", "list")
            if len(entries) != 20 or any(e["attempts"] < 1 for e in entries):
                return None
            return entries
        entries = wait_until(all_deferred, "20 messages with an attempt", 30)
        self.assertEqual({e["id"] for e in entries}, set(ids))
        for e in entries:
            self.assertEqual(len(e["recipients_pending"]), 1)
            reply = e["recipients_pending"][0]["last_reply"]
            self.assertRegex(reply, r"^451 4\.4\.1 ", e)
        text = self.ctl("queue", "list").stdout
        self.assertIn("451 4.4.1", text)
        self.assertIn("20 message(s)", text)
        self.assertGreaterEqual(self.metric_sum("chute_delivery_recipients_deferred_total"), 20)
        self.assertEqual(self.metrics()["chute_spool_messages"], 20)

        server = FakeSmtp(self.down_port)
        self.addCleanup(server.stop)
        self.settle(30)
        self.assertEqual(self.queue("queue", "list"), [])
        time.sleep(2.5)  # longer than retry_max_s: a stray retry would show up now
        tags = server.tags()
        self.assertEqual(sorted(tags), sorted(ids.values()), "each message exactly once")
        self.assertEqual(self.metric_sum("chute_delivery_recipients_delivered_total"), 20)
        self.assertEqual(self.queue("queue", "dead"), [])


# -------------------------------------------------------------------------------------------
# 4. 5xx -> dead letter -> the cause is fixed -> requeue.

class DeadLetterRequeueTest(DeliveryFixture):
    def setUp(self):
        self.server = FakeSmtp()
        self.addCleanup(self.server.stop)
        self.server.reject["gone@example.test"] = (
            "550 5.1.1 <gone@example.test>: Recipient address rejected: User unknown")
        self.extra_config = delivery_config("smtp", f"127.0.0.1:{self.server.port}")
        super().setUp()

    def test_550_goes_to_dead_letters_and_requeue_delivers_it_after_the_fix(self):
        queue_id = self.send(["gone@example.test", "here@example.test"], "dead-1")
        self.settle(30)
        self.assertEqual(self.server.deliveries(), [("dead-1", "here@example.test")])
        dead = self.queue("queue", "dead")
        self.assertEqual(len(dead), 1, dead)
        self.assertEqual(dead[0]["id"], queue_id)
        self.assertEqual(dead[0]["recipients"], [{
            "address": "gone@example.test",
            "reply": "550 5.1.1 <gone@example.test>: Recipient address rejected: User unknown",
            "route": "default"}])
        text = self.ctl("queue", "dead").stdout
        self.assertIn(queue_id, text)
        self.assertIn("gone@example.test: 550 5.1.1", text)
        eml = os.path.join(self.dir, "dead", queue_id + ".eml")
        reason = os.path.join(self.dir, "dead", queue_id + ".json")
        with open(eml, "rb") as f:
            self.assertEqual(tags_in(f.read()), [b"dead-1"])
        self.assertTrue(os.path.exists(reason))
        self.assertEqual(self.metric_sum("chute_delivery_recipients_dead_total"), 1)

        with self.server.lock:
            self.server.reject.clear()  # the mailbox exists now
        self.assertEqual(self.ctl("queue", "requeue", queue_id).returncode, 0)
        wait_until(lambda: ("dead-1", "gone@example.test") in self.server.deliveries(),
                   "the requeued message at the downstream", 30)
        self.settle(30)
        wait_until(lambda: not os.path.exists(eml) and not os.path.exists(reason),
                   "the dead-letter files to go", 10)
        self.assertEqual(self.queue("queue", "dead"), [])
        self.assertEqual(self.queue("queue", "list"), [])
        self.assertEqual(sorted(self.server.deliveries()),
                         [("dead-1", "gone@example.test"), ("dead-1", "here@example.test")],
                         "the recipient delivered the first time must not get it again")

    def test_requeue_while_still_refused_dead_letters_it_again(self):
        queue_id = self.send(["gone@example.test"], "dead-2")
        self.settle(30)
        self.assertEqual([d["id"] for d in self.queue("queue", "dead")], [queue_id])
        # Postfix spelling of requeue.
        self.assertEqual(self.ctl("postsuper", "-r", queue_id).returncode, 0)
        wait_until(lambda: self.server.rcpts_seen.count("gone@example.test") >= 2,
                   "a second attempt", 30)
        self.settle(30)
        dead = wait_until(lambda: self.queue("queue", "dead"), "the dead letter again", 10)
        self.assertEqual([d["id"] for d in dead], [queue_id])
        self.assertTrue(dead[0]["recipients"][0]["reply"].startswith("550 5.1.1"))
        self.assertTrue(os.path.exists(os.path.join(self.dir, "dead", queue_id + ".eml")))
        self.assertEqual(self.server.deliveries(), [])


class LookalikeDomainTest(DeliveryFixture):
    """A lookalike spelling of an accepted domain (fullwidth letters, U+FF0E for the dot) is
    accepted as that domain, and passed downstream as its A-label: the downstream's MAIL FROM
    and RCPT TO, and the trace, never see the raw spelling."""

    def setUp(self):
        self.server = FakeSmtp()
        self.addCleanup(self.server.stop)
        self.extra_config = delivery_config("smtp", f"127.0.0.1:{self.server.port}")
        super().setUp()

    def test_downstream_rcpt_and_mail_use_the_a_label(self):
        fullwidth = "\uff43\uff4f\uff52\uff50.test"
        body = message_body("lookalike-1")
        with smtplib.SMTP("127.0.0.1", self.port, timeout=30) as c:
            c.ehlo("client.example.test")
            c.sendmail("app@example\uff0etest", [f"Bob@{fullwidth}", "carol@corp\uff0etest"],
                       body, mail_options=["SMTPUTF8"])
        self.settle(30)
        with self.server.lock:
            self.assertEqual(self.server.rcpts_seen, ["Bob@corp.test", "carol@corp.test"])
            self.assertEqual([m[0] for m in self.server.messages], ["<app@example.test>"])
        def delivered_rows():
            rows = [r for r in json.loads(self.ctl("--json", "trace").stdout)
                    if r["status"] == "delivered"]
            return rows if len(rows) == 2 else None
        rows = wait_until(delivered_rows, "both recipients delivered in the trace", 15)
        self.assertEqual(sorted(r["recipient"] for r in rows), ["Bob@corp.test", "carol@corp.test"])
        self.assertEqual({r["sender"] for r in rows}, {"app@example.test"})


class MaildirSymlinkTest(DeliveryFixture):
    """Symbolic links planted in the Maildir tree (by anyone who can write into a mailbox)
    pointing outside it: chute follows none of them. The start-up clean-up of tmp/ leaves what
    the link points at alone, and a delivery through a linked folder is a transient 451 that
    names the folder, with nothing written outside."""

    def outside(self):
        """A folder beside the Maildir root with one old file, `precious`."""
        outside = os.path.join(self.dir, "outside")
        os.mkdir(outside)
        path = os.path.join(outside, "precious")
        with open(path, "w") as f:
            f.write("keep me")
        os.utime(path, (0, 0))  # older than the 36 h after which tmp/ files go
        return outside

    def restart(self):
        self.proc.send_signal(signal.SIGTERM)
        self.assertEqual(self.proc.wait(timeout=40), 0)
        self.proc = subprocess.Popen([CHUTED, "--config", self.config], stdout=self.log,
                                     stderr=subprocess.STDOUT)
        wait_for_port("127.0.0.1", self.port)

    def pending_reply(self, queue_id, recipient):
        entry = self.wait_attempted(queue_id)
        for r in entry["recipients_pending"]:
            if r["address"] == recipient:
                return r["last_reply"]
        self.fail(f"{recipient} is not pending: {entry}")

    def test_startup_cleanup_does_not_follow_a_tmp_link(self):
        outside = self.outside()
        leftover = "1790000000.6613C92C8C6B7000000001R0.relay.example.test"  # named as ours
        with open(os.path.join(outside, leftover), "w") as f:
            f.write("x")
        box = self.maildir("victim@example.test")
        os.makedirs(os.path.join(box, "new"))
        os.makedirs(os.path.join(box, "cur"))
        os.symlink(outside, os.path.join(box, "tmp"))
        self.restart()  # the clean-up runs before delivery starts
        self.assertEqual(sorted(os.listdir(outside)), [leftover, "precious"])
        self.assertIn(f"maildir: {box}/tmp is a symbolic link; not followed", self.read_log())

        queue_id = self.send(["victim@example.test"], "link-tmp")
        self.assertEqual(self.pending_reply(queue_id, "victim@example.test"),
                         "451 4.3.0 maildir: open example.test/victim/tmp: "
                         "Too many levels of symbolic links")
        self.assertEqual(sorted(os.listdir(outside)), [leftover, "precious"])
        self.assertRegex(self.read_log(), rf"event=delivery queue_id={queue_id} "
                                          r"recipient=victim@example.test .*status=deferred")

    def test_linked_new_or_cur_defers_the_copy_and_writes_nothing_outside(self):
        outside = self.outside()
        for address, folder in (("newlink@example.test", "new"), ("curlink@example.test", "cur")):
            box = self.maildir(address)
            for f in ("tmp", "new", "cur"):
                if f != folder:
                    os.makedirs(os.path.join(box, f))
            os.symlink(outside, os.path.join(box, folder))
        queue_id = self.send(["newlink@example.test", "curlink@example.test",
                              "fine@example.test"], "link-new-cur")
        for address, folder in (("newlink", "new"), ("curlink", "cur")):
            self.assertEqual(self.pending_reply(queue_id, f"{address}@example.test"),
                             f"451 4.3.0 maildir: open example.test/{address}/{folder}: "
                             "Too many levels of symbolic links")
        self.assertEqual(len(os.listdir(os.path.join(self.maildir("fine@example.test"), "new"))),
                         1, "the recipient without a link is delivered")
        self.assertEqual(os.listdir(outside), ["precious"])

    def test_link_planted_at_the_copys_name_in_tmp_is_not_written_through(self):
        # A copy's name in tmp/ is predictable (received time, queue id): plant a link there
        # while the first attempt fails (new/ is a file), then retry.
        outside = self.outside()
        box = self.maildir("target@example.test")
        os.makedirs(os.path.join(box, "tmp"))
        os.makedirs(os.path.join(box, "cur"))
        open(os.path.join(box, "new"), "w").close()
        queue_id = self.send(["target@example.test"], "planted")
        entry = self.wait_attempted(queue_id)
        received_s = calendar.timegm(time.strptime(entry["received"], "%Y-%m-%dT%H:%M:%SZ"))
        name = f"{received_s}.{queue_id}R0.relay.example.test"
        os.remove(os.path.join(box, "new"))
        os.mkdir(os.path.join(box, "new"))
        os.symlink(os.path.join(outside, "precious"), os.path.join(box, "tmp", name))
        self.ctl("queue", "retry", queue_id)
        self.settle()
        with open(os.path.join(outside, "precious")) as f:
            self.assertEqual(f.read(), "keep me")
        copy = os.path.join(box, "new", name)
        self.assertFalse(os.path.islink(copy))
        with open(copy, "rb") as f:
            self.assertEqual(tags_in(f.read()), [b"planted"])


# -------------------------------------------------------------------------------------------
# 5. Every queue command.

class QueueControlFixture(DeliveryFixture):
    retry_initial_s = 3600

    def setUp(self):
        self.server = FakeSmtp()
        self.addCleanup(self.server.stop)
        self.server.defer_all = "451 4.3.0 Try again later"
        self.extra_config = delivery_config(
            "smtp", f"127.0.0.1:{self.server.port}", retry_initial_s=self.retry_initial_s,
            retry_max_s=max(self.retry_initial_s, 2))
        super().setUp()

    def accept_all(self):
        with self.server.lock:
            self.server.defer_all = None

    def queued_ids(self):
        return [e["id"] for e in self.queue("queue", "list")]


class QueueHoldTest(QueueControlFixture):
    retry_initial_s = 1  # a message not held would be retried within about a second

    def test_held_message_is_not_attempted_until_released(self):
        queue_id = self.send(["held@example.test"], "held-1")
        self.wait_attempted(queue_id)
        self.assertEqual(self.ctl("queue", "hold", queue_id).returncode, 0)
        entry = wait_until(lambda: (lambda e: e if not e["in_flight"] else None)(
            self.queue("queue", "show", queue_id)), "the attempt in flight to end", 15)
        self.assertTrue(entry["held"])
        self.assertIsNone(entry["next_attempt"])
        attempts = entry["attempts"]
        seen = self.server.rcpts_seen.count("held@example.test")
        self.accept_all()
        time.sleep(3)  # three retry intervals
        self.ctl("queue", "retry", "--all")  # retry --all does not release a held message
        time.sleep(1)
        self.assertEqual(self.server.rcpts_seen.count("held@example.test"), seen)
        self.assertEqual(self.server.tags(), [])
        entry = self.queue("queue", "show", queue_id)
        self.assertEqual(entry["attempts"], attempts)
        self.assertTrue(entry["held"])
        listing = self.ctl("queue", "list").stdout
        self.assertRegex(listing, queue_id + r".* held ")
        self.assertEqual(self.metrics()["chute_spool_messages"], 1)
        self.assertEqual(self.ctl("queue", "release", queue_id).returncode, 0)
        self.settle(30)
        self.assertEqual(self.server.tags(), ["held-1"])
        self.assertEqual(self.queued_ids(), [])

    def test_postsuper_h_and_H_hold_and_release(self):
        queue_id = self.send(["held2@example.test"], "held-2")
        self.wait_attempted(queue_id)
        # postsuper's -h is its hold flag here, not a request for chutectl's help.
        hold = self.ctl("postsuper", "-h", queue_id)
        self.assertFalse(hold.stdout.startswith("Usage:"),
                         "chutectl postsuper -h ID printed its usage instead of holding")
        self.assertEqual(hold.stdout.strip(), f"held: {queue_id}")
        wait_until(lambda: not self.queue("queue", "show", queue_id)["in_flight"], "idle", 15)
        self.assertTrue(self.queue("queue", "show", queue_id)["held"])
        self.accept_all()
        time.sleep(2.5)
        self.assertEqual(self.server.tags(), [])
        self.assertEqual(self.ctl("postsuper", "-H", queue_id).stdout.strip(),
                         f"released: {queue_id}")
        self.settle(30)
        self.assertEqual(self.server.tags(), ["held-2"])


class QueueRetryTest(QueueControlFixture):
    retry_initial_s = 3600  # only an explicit retry can make a second attempt

    def test_retry_id_attempts_one_message_before_its_backoff_ends(self):
        first = self.send(["r1@example.test"], "retry-1")
        second = self.send(["r2@example.test"], "retry-2")
        self.wait_attempted(first)
        self.wait_attempted(second)
        self.accept_all()
        self.assertEqual(self.ctl("queue", "retry", first).returncode, 0)
        wait_until(lambda: self.server.tags() == ["retry-1"], "retry-1 delivered", 15)
        wait_until(lambda: self.queued_ids() == [second], "retry-1 to leave the queue", 15)
        entry = self.queue("queue", "show", second)
        self.assertEqual(entry["attempts"], 1, "the other message must not have been tried")
        self.assertEqual(self.metrics()["chute_spool_messages"], 1)
        # postqueue -i ID is the Postfix spelling of retry ID.
        self.assertEqual(self.ctl("postqueue", "-i", second).returncode, 0)
        self.settle(30)
        self.assertEqual(sorted(self.server.tags()), ["retry-1", "retry-2"])

    def test_retry_all_and_postqueue_f_attempt_every_message(self):
        ids = [self.send([f"all{i}@example.test"], f"all-{i}") for i in range(4)]
        for queue_id in ids:
            self.wait_attempted(queue_id)
        self.accept_all()
        time.sleep(1)
        self.assertEqual(self.server.tags(), [], "nothing is retried before its backoff")
        result = self.queue("queue", "retry", "--all")
        self.assertEqual(result, {"retried": 4})
        self.settle(30)
        self.assertEqual(sorted(self.server.tags()), [f"all-{i}" for i in range(4)])
        # postqueue -f: same, with the downstream deferring again first.
        with self.server.lock:
            self.server.defer_all = "451 4.3.0 Try again later"
        more = [self.send([f"f{i}@example.test"], f"f-{i}") for i in range(3)]
        for queue_id in more:
            self.wait_attempted(queue_id)
        self.accept_all()
        self.assertEqual(self.ctl("postqueue", "-f").returncode, 0)
        self.settle(30)
        self.assertEqual(sorted(t for t in self.server.tags() if t.startswith("f-")),
                         ["f-0", "f-1", "f-2"])


class QueueDeleteShowTest(QueueControlFixture):
    retry_initial_s = 3600

    def test_delete_drops_the_message_for_good(self):
        keep = self.send(["keep@example.test"], "keep")
        drop = self.send(["drop@example.test"], "drop")
        drop2 = self.send(["drop2@example.test"], "drop2")
        for queue_id in (keep, drop, drop2):
            self.wait_attempted(queue_id)
        self.assertEqual(self.metrics()["chute_spool_messages"], 3)
        self.assertEqual(self.queue("queue", "delete", drop), {"deleted": drop})
        self.assertEqual(self.ctl("postsuper", "-d", drop2).returncode, 0)
        self.assertEqual(self.queued_ids(), [keep])
        self.assertEqual(self.metrics()["chute_spool_messages"], 1)
        self.assertEqual(self.ctl("queue", "show", drop, check=False).returncode, 2)
        self.accept_all()
        self.ctl("queue", "retry", "--all")
        self.settle(30)
        time.sleep(1)
        self.assertEqual(self.server.tags(), ["keep"], "a deleted message was delivered")
        self.assertEqual(self.metrics()["chute_spool_messages"], 0)
        self.assertEqual(self.queue("queue", "dead"), [], "deleted is not dead")
        self.assertIn(f"{drop} deleted by the operator", self.read_log())

    def test_show_list_and_their_postfix_spellings(self):
        queue_id = self.send(["show@example.test", "show2@corp.test"], "show-1")
        self.wait_attempted(queue_id)
        entry = self.queue("queue", "show", queue_id)
        self.assertEqual(entry["id"], queue_id)
        self.assertEqual(entry["sender"], "app@example.test")
        self.assertEqual([r["address"] for r in entry["recipients_pending"]],
                         ["show@example.test", "show2@corp.test"])
        for r in entry["recipients_pending"]:
            self.assertEqual(r["last_reply"], "451 4.3.0 Try again later")
        self.assertGreaterEqual(entry["attempts"], 1)
        self.assertFalse(entry["held"])
        self.assertGreater(entry["size_bytes"], len(message_body("show-1")))
        self.assertRegex(entry["next_attempt"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
        for key in ("received", "age_s", "tenant_id", "account_id", "in_flight"):
            self.assertIn(key, entry)
        self.assertEqual(json.loads(self.ctl("queue", "show", queue_id).stdout)["id"], queue_id)
        listed = self.queue("queue", "list")
        self.assertEqual([e["id"] for e in listed], [queue_id])
        self.assertEqual(listed[0], {**entry, "age_s": listed[0]["age_s"]})
        for words in (["queue", "list"], ["mailq"], ["postqueue", "-p"]):
            result = self.ctl(*words)
            self.assertIn(queue_id, result.stdout, words)
            self.assertIn("show@example.test (451 4.3.0 Try again later)", result.stdout, words)
            self.assertIn("1 message(s)", result.stdout, words)
            self.assertEqual(json.loads(self.ctl("--json", *words).stdout)[0]["id"], queue_id)
        self.assertEqual(self.queue("queue", "dead"), [])
        self.assertIn("empty", self.ctl("queue", "dead").stdout)
        self.ctl("queue", "delete", queue_id)
        self.assertIn("The queue is empty.", self.ctl("mailq").stdout)
        self.assertEqual(self.queue("postqueue", "-p"), [])

    def test_unknown_id_fails_with_exit_2_and_says_why(self):
        for words in (["queue", "show", UNKNOWN_ID], ["queue", "retry", UNKNOWN_ID],
                      ["queue", "hold", UNKNOWN_ID], ["queue", "release", UNKNOWN_ID],
                      ["queue", "delete", UNKNOWN_ID], ["queue", "requeue", UNKNOWN_ID],
                      ["postsuper", "-d", UNKNOWN_ID], ["postqueue", "-i", UNKNOWN_ID]):
            for json_flag in ([], ["--json"]):
                result = self.ctl(*json_flag, *words, check=False)
                self.assertEqual(result.returncode, 2, (words, result.stdout, result.stderr))
                self.assertIn(UNKNOWN_ID, result.stderr, words)
                if json_flag:  # with --json, the error is also a JSON document on stdout
                    self.assertIn(UNKNOWN_ID, json.loads(result.stdout)["error"], words)
                else:
                    self.assertEqual(result.stdout, "", words)

    def test_usage_errors_exit_1(self):
        for words in (["queue"], ["queue", "frobnicate", UNKNOWN_ID], ["queue", "show"],
                      ["queue", "list", UNKNOWN_ID], ["queue", "show", "a/b"]):
            result = self.ctl(*words, check=False)
            self.assertEqual(result.returncode, 1, (words, result.stderr))
            self.assertIn("queue", result.stderr)


class DeadLetterIdTest(DeliveryFixture):
    """The id in /dead/ID/requeue is checked to be a queue id before it names a file, and no
    error an HTTP client gets names a filesystem path (was: POST /dead/%2e%2e/requeue answered
    404 with "open <data_dir>/dead/%2e%2e.json: No such file or directory")."""

    def post(self, path):
        status, _, body = self.admin_request(path, "POST")
        return status, body.decode()

    def test_requeue_refuses_what_is_not_a_queue_id_and_names_no_path(self):
        os.makedirs(os.path.join(self.dir, "dead"), exist_ok=True)
        for raw in ("%2e%2e", "%2E%2E%2Fchute", "..%2f..%2fetc%2fpasswd", "%2e", "M3",
                    UNKNOWN_ID.lower(), UNKNOWN_ID + "0"):
            status, body = self.post(f"/dead/{raw}/requeue")
            self.assertEqual((status, json.loads(body)), (400, {"error": "not a queue id"}), raw)
        status, body = self.post(f"/dead/{UNKNOWN_ID}/requeue")
        self.assertEqual((status, json.loads(body)), (404, {"error": f"no dead letter {UNKNOWN_ID}"}))
        # A damaged dead letter: the path is in the log, not in the answer.
        with open(os.path.join(self.dir, "dead", UNKNOWN_ID + ".json"), "w") as f:
            f.write("{}")
        status, body = self.post(f"/dead/{UNKNOWN_ID}/requeue")
        self.assertEqual(status, 400)
        self.assertNotIn(self.dir, body)
        self.assertNotIn("/", json.loads(body)["error"])
        self.assertIn(f"{self.dir}/dead/{UNKNOWN_ID}.json is not a dead-letter record",
                      self.read_log())


# -------------------------------------------------------------------------------------------
# 6. One spool, one chuted.

class SecondChutedTest(DeliveryFixture):
    def setUp(self):
        self.server = FakeSmtp()
        self.addCleanup(self.server.stop)
        self.extra_config = delivery_config("smtp", f"127.0.0.1:{self.server.port}")
        super().setUp()

    def test_second_chuted_on_the_same_data_dir_refuses_to_start(self):
        # Other ports, same data_dir: only the spool can make it refuse.
        with open(self.config) as f:
            text = f.read()
        other = os.path.join(self.dir, "second.toml")
        with open(other, "w") as f:
            f.write(text.replace(f"127.0.0.1:{self.port}", f"127.0.0.1:{free_port()}")
                    .replace(f"127.0.0.1:{self.admin_port}", f"127.0.0.1:{free_port()}"))
        try:
            second = subprocess.run([CHUTED, "--config", other], capture_output=True,
                                    text=True, timeout=30)
        except subprocess.TimeoutExpired:
            self.fail("the second chuted kept running on a spool in use")
        self.assertNotEqual(second.returncode, 0)
        self.assertIn("in use by another chuted", second.stdout + second.stderr)
        self.assertIn(f"pid {self.proc.pid}", second.stdout + second.stderr)
        # The first one is unharmed.
        self.send(["still@example.test"], "still-1")
        self.settle(30)
        self.assertEqual(self.server.tags(), ["still-1"])


# -------------------------------------------------------------------------------------------
# 7. SMTP to a real, private Postfix instance, which relays to FakeSmtp.

def start_postfix(test, relay_port):
    """A private Postfix (its own config and queue directories); returns its smtpd port."""
    if not os.path.exists(POSTFIX) or os.getuid() != 0:
        test.skipTest("a private Postfix needs postfix installed and root")
    try:
        pwd.getpwnam("postfix")
    except KeyError:
        test.skipTest("the system has no postfix user")
    base = tempfile.mkdtemp(prefix="chute-postfix-")
    test.addCleanup(shutil.rmtree, base, True)
    os.chmod(base, 0o755)
    conf = os.path.join(base, "conf")
    queue = os.path.join(base, "queue")
    data = os.path.join(base, "data")
    for d in (conf, queue, data):
        os.mkdir(d, 0o755)
    shutil.chown(data, "postfix", "postfix")
    port = free_port()
    with open(os.path.join(conf, "main.cf"), "w") as f:
        f.write(f"""
compatibility_level = 3.6
queue_directory = {queue}
data_directory = {data}
meta_directory = /etc/postfix
mail_owner = postfix
setgid_group = postdrop
myhostname = postfix.relay.test
mydomain = relay.test
myorigin = $myhostname
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relayhost = [127.0.0.1]:{relay_port}
smtp_tls_security_level = none
smtpd_tls_security_level = none
smtputf8_enable = no
biff = no
maillog_file = {base}/postfix.log
maillog_file_prefixes = {base}
alias_maps =
alias_database =
local_recipient_maps =
smtp_host_lookup = native
disable_dns_lookups = yes
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
""")
    with open(os.path.join(HERE, "postfix", "master.cf.in")) as template, \
            open(os.path.join(conf, "master.cf"), "w") as f:
        f.write(template.read().replace("@LISTEN@", f"127.0.0.1:{port}"))
    env = {**os.environ, "MAIL_CONFIG": conf}
    start = subprocess.run([POSTFIX, "-c", conf, "start"], capture_output=True, text=True,
                           timeout=60, env=env)

    def stop():
        subprocess.run([POSTFIX, "-c", conf, "stop"], capture_output=True, timeout=60, env=env)
        # postfix stop returns before master has exited; wait for its pid file's process.
        pid_file = os.path.join(queue, "pid", "master.pid")
        try:
            with open(pid_file) as f:
                pid = int(f.read().strip())
        except (OSError, ValueError):
            return
        end = time.monotonic() + 20
        while time.monotonic() < end:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)
        subprocess.run([POSTFIX, "-c", conf, "abort"], capture_output=True, timeout=60, env=env)
    test.addCleanup(stop)
    test.postfix_log = os.path.join(base, "postfix.log")

    def log():  # postfix(1) writes its own errors to stderr only when that is a terminal
        if not os.path.exists(test.postfix_log):
            return "(no log; run `script -qc 'postfix -c DIR start'` to see its errors)"
        with open(test.postfix_log) as f:
            return f.read()
    if start.returncode != 0:
        test.fail(f"postfix -c {conf} start failed:\n{start.stdout}{start.stderr}{log()}")
    try:
        wait_for_greeting(port, 30)
    except RuntimeError:
        test.fail(f"the private postfix does not answer on {port}:\n{log()}")
    return port


class SmtpToPostfixTest(DeliveryFixture):
    def setUp(self):
        self.final = FakeSmtp()
        self.addCleanup(self.final.stop)
        self.postfix_port = start_postfix(self, self.final.port)
        self.extra_config = delivery_config("smtp", f"127.0.0.1:{self.postfix_port}",
                                            tls="opportunistic")
        super().setUp()

    def test_messages_pass_through_a_real_postfix(self):
        expected = set()
        for i in range(10):
            recipients = [f"pf{i}-{k}@example.test" for k in range(1 + i % 4)]
            self.send(recipients, f"pf-{i}")
            expected |= {(f"pf-{i}", r) for r in recipients}
        self.settle(60)
        self.assertEqual(self.queue("queue", "dead"), [])
        got = wait_until(lambda: (lambda d: d if len(d) >= len(expected) else None)(
            self.final.deliveries()), "Postfix to relay everything", 60)
        self.assertEqual(sorted(got), sorted(expected))
        for _, _, data in self.final.messages:
            self.assertIn(b"by relay.example.test (chute)", data)  # chute's Received:
            self.assertIn(b"postfix.relay.test", data)  # and Postfix's
        self.assertEqual(self.metric_sum("chute_delivery_recipients_delivered_total"),
                         len(expected))


if __name__ == "__main__":
    unittest.main()
