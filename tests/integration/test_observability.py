"""Per-message logs (key=value, JSON, the journal's native protocol), the message trace
(chutectl trace, Get-MessageTraceV2) and the metrics behind them, against a real chuted.

Delivery goes to FakeSmtp (test_delivery), which refuses gone@example.test with a 550, so one
run shows a delivered recipient, a failed one and, when told to defer, a deferred one.
"""

import json
import os
import smtplib
import socket
import ssl
import time
import unittest

from chute_fixture import APP_PASSWORD
from test_delivery import DeliveryFixture, FakeSmtp, delivery_config, wait_until

GONE_REPLY = "550 5.1.1 <gone@example.test>: Recipient address rejected: User unknown"


class TraceFixture(DeliveryFixture):
    def setUp(self):
        self.server = FakeSmtp()
        self.addCleanup(self.server.stop)
        self.server.reject["gone@example.test"] = GONE_REPLY
        self.extra_config = delivery_config("smtp", f"127.0.0.1:{self.server.port}",
                                            give_up_after_s=3600)
        super().setUp()

    def trace(self, *args, check=True):
        result = self.ctl("--json", "trace", *args, check=check)
        return json.loads(result.stdout) if result.returncode == 0 else result

    def wait_trace(self, predicate, what, *args):
        """Polls `trace ARGS` until predicate(rows) holds; returns the rows."""
        def check():
            rows = self.trace(*args)
            return rows if predicate(rows) else None
        return wait_until(check, what, 20, 0.2)


class MessageTraceTest(TraceFixture):
    def test_trace_answers_by_queue_id_recipient_message_id_status_and_time(self):
        a = self.send(["here@example.test", "gone@example.test"], "trace-a")
        b = self.send(["here@example.test"], "trace-b", message_id="<b-1@apps.example.test>")
        self.settle(30)
        rows = self.wait_trace(
            lambda rows: len(rows) == 2 and all(r["status"] != "pending" for r in rows),
            "both recipients of the first message to have a result", "--queue-id", a)
        by_rcpt = {r["recipient"]: r for r in rows}
        self.assertEqual(by_rcpt["here@example.test"]["status"], "delivered")
        self.assertEqual(by_rcpt["gone@example.test"]["status"], "failed")
        self.assertEqual(by_rcpt["gone@example.test"]["reply"], GONE_REPLY)
        self.assertEqual(by_rcpt["gone@example.test"]["attempts"], 1)
        for r in rows:
            self.assertEqual(r["queue_id"], a)
            self.assertEqual(r["sender"], "app@example.test")
            self.assertEqual(r["account"], "app@example.test")
            self.assertEqual(r["tenant"], "example.test")
            self.assertEqual(r["client"], "127.0.0.1")
            self.assertGreater(r["size_bytes"], 0)
            # chute added a Message-ID (the submitter left it out): its queue id is in it.
            self.assertIn(a, r["message_id"])

        # By Message-ID, with or without the angle brackets.
        for mid in ("<b-1@apps.example.test>", "b-1@apps.example.test"):
            rows = self.wait_trace(lambda rows: len(rows) == 1, "message b", "--message-id", mid)
            self.assertEqual(rows[0]["queue_id"], b)
            self.assertEqual(rows[0]["message_id"], "<b-1@apps.example.test>")

        rows = self.trace("--recipient", "GONE@example.test", "--status", "failed")
        self.assertEqual([(r["queue_id"], r["recipient"]) for r in rows],
                         [(a, "gone@example.test")])
        rows = self.trace("--sender", "app@example.test", "--status", "delivered")
        self.assertEqual(sorted(r["queue_id"] for r in rows), sorted([a, b]))
        self.assertEqual(self.trace("--from", "2h", "--to", "1h"), [])
        self.assertEqual(len(self.trace("--limit", "1")), 1)

        # Details: every event of the message, oldest first.
        rows = self.trace("--queue-id", a, "--recipient", "gone@example.test", "--details")
        events = [e["event"] for e in rows[0]["events"]]
        self.assertEqual(events, ["received", "failed"])
        self.assertIn(GONE_REPLY, rows[0]["events"][1]["detail"])

        # The cmdlet: PowerShell's words, -Name:value, and Failed meaning failed or dead.
        result = self.ctl("--json", "Get-MessageTraceV2", "-SenderAddress", "app@example.test",
                          "-Status:Failed")
        rows = json.loads(result.stdout)
        self.assertEqual([(r["queue_id"], r["recipient"]) for r in rows],
                         [(a, "gone@example.test")])

        # Text and CSV.
        text = self.ctl("trace", "--queue-id", a).stdout
        self.assertIn("failed", text)
        self.assertIn(GONE_REPLY, text)
        csv = self.ctl("trace", "--queue-id", a, "--csv").stdout.splitlines()
        self.assertTrue(csv[0].startswith("received,status,queue_id,message_id"))
        self.assertEqual(len(csv), 3)

    def test_bad_arguments_are_usage_errors(self):
        for args in (["--status", "lost"], ["--from", "yesterday"], ["--limit", "0"],
                     ["--limit", "5001"], ["--csv", "--json"], ["--bogus"],
                     ["--from", "2026-11-27", "--to", "2026-11-26"], ["--sender"]):
            result = self.ctl("trace", *args, check=False)
            self.assertEqual(result.returncode, 1, (args, result.stderr))
            self.assertIn("chutectl:", result.stderr)
        result = self.ctl("Get-MessageTraceV2", "-Sender", "x", check=False)
        self.assertEqual(result.returncode, 1)
        self.assertIn("-SenderAddress", result.stderr)

    def test_a_deferred_recipient_shows_deferred_with_its_attempts(self):
        with self.server.lock:
            self.server.defer_all = "451 4.3.0 try again later"
        a = self.send(["later@example.test"], "trace-deferred")
        rows = self.wait_trace(lambda rows: rows and rows[0]["status"] == "deferred",
                               "the recipient to be deferred", "--queue-id", a)
        self.assertEqual(rows[0]["reply"], "451 4.3.0 try again later")
        self.assertGreaterEqual(rows[0]["attempts"], 1)
        # While it waits for its retry, the queue's oldest age counts it.
        wait_until(lambda: self.metrics()["chute_queue_oldest_age_seconds"] > 0,
                   "the oldest age to count the deferred message", 10)
        with self.server.lock:
            self.server.defer_all = None
        self.settle(30)
        self.wait_trace(lambda rows: rows and rows[0]["status"] == "delivered",
                        "the recipient to be delivered on retry", "--queue-id", a)


class NoTraceYetTest(unittest.TestCase):
    def test_trace_without_a_database_says_where_it_looked(self):
        import subprocess
        import tempfile
        from chute_fixture import CHUTECTL
        with tempfile.TemporaryDirectory() as d:
            config = os.path.join(d, "chute.toml")
            with open(config, "w") as f:
                f.write(f'[server]\ndata_dir = "{d}"\n')
            result = subprocess.run([CHUTECTL, "--config", config, "trace"], capture_output=True,
                                    text=True)
            self.assertEqual(result.returncode, 2)
            self.assertIn(os.path.join(d, "trace.db"), result.stderr)


class LogLinesTest(TraceFixture):
    with_tls = True

    def test_each_event_is_one_key_value_line_with_the_queue_id(self):
        a = self.send(["here@example.test", "gone@example.test"], "log-a")
        try:
            self.send(["someone@elsewhere.test"], "log-refused")
        except AssertionError:
            pass
        self.settle(30)
        log = wait_until(lambda: (lambda t: t if "status=failed" in t else None)(self.read_log()),
                         "the delivery lines", 20)
        lines = log.splitlines()
        accepted = [l for l in lines if "event=message.accepted" in l and a in l]
        self.assertEqual(len(accepted), 1, log)
        self.assertTrue(accepted[0].startswith("<6>event=message.accepted queue_id=" + a))
        for field in ("account=app@example.test", "tenant=example.test",
                      "sender=app@example.test", "recipients=2", "tls=none",
                      "client=127.0.0.1", f"message_id=<{a}@relay.example.test>"):
            self.assertIn(field, accepted[0])
        delivered = [l for l in lines if "event=delivery" in l and a in l]
        self.assertEqual(len(delivered), 2, log)
        failed = [l for l in delivered if "recipient=gone@example.test" in l][0]
        self.assertTrue(failed.startswith("<4>"), failed)  # a warning
        self.assertIn(f'status=failed reply="{GONE_REPLY}" attempt=1', failed)
        self.assertIn(f"target=smtp:127.0.0.1:{self.server.port}", failed)
        refused = [l for l in lines if "event=rcpt.refused" in l]
        self.assertEqual(len(refused), 1, log)
        self.assertIn("recipient=someone@elsewhere.test code=550", refused[0])
        self.assertIn('reply="5.7.54 ', refused[0])
        self.assertTrue(any("event=connection.accepted client=127.0.0.1" in l for l in lines))

    def test_auth_lines_name_the_account_and_mechanism_never_the_password(self):
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        with smtplib.SMTP("127.0.0.1", self.tls_port, timeout=30) as c:
            c.starttls(context=context)
            with self.assertRaises(smtplib.SMTPAuthenticationError):
                c.login("app@example.test", "wrong-password-123")
        with smtplib.SMTP("127.0.0.1", self.tls_port, timeout=30) as c:
            c.starttls(context=context)
            c.login("app@example.test", APP_PASSWORD)
        log = wait_until(lambda: (lambda t: t if "event=auth.ok" in t else None)(self.read_log()),
                         "the auth lines", 20)
        self.assertNotIn("wrong-password-123", log)
        self.assertNotIn(APP_PASSWORD, log)
        # smtplib tries PLAIN, then LOGIN: two failures, each with its mechanism.
        failed = [l for l in log.splitlines() if "event=auth.failed" in l]
        self.assertEqual(len(failed), 2, log)
        self.assertIn("user=app@example.test mechanism=PLAIN code=535", failed[0])
        self.assertIn("user=app@example.test mechanism=LOGIN code=535", failed[1])
        ok = [l for l in log.splitlines() if "event=auth.ok" in l][0]
        self.assertIn("account=app@example.test tenant=example.test mechanism=", ok)
        metrics = self.metrics()
        self.assertEqual(metrics.get('chute_replies_total{code="535",enhanced="5.7.3"}'), 2,
                         [k for k in metrics if "replies" in k])


class JsonLogTest(TraceFixture):
    def setUp(self):
        super().setUp()

    @property
    def extra_config(self):
        return self._extra + "\n[log]\njson = true\n"

    @extra_config.setter
    def extra_config(self, value):
        self._extra = value

    def test_every_line_is_a_json_object(self):
        a = self.send(["here@example.test"], "json-a")
        self.settle(30)
        log = wait_until(lambda: (lambda t: t if '"event":"delivery"' in t else None)(
            self.read_log()), "the delivery line", 20)
        objects = [json.loads(line) for line in log.splitlines()]
        accepted = [o for o in objects if o.get("event") == "message.accepted"]
        self.assertEqual(len(accepted), 1)
        self.assertEqual(accepted[0]["queue_id"], a)
        self.assertEqual(accepted[0]["level"], "info")
        self.assertRegex(accepted[0]["ts"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
        self.assertTrue(any("msg" in o and "listening on" in o["msg"] for o in objects))


class JournalTest(TraceFixture):
    """JOURNAL_STREAM names chuted's stderr: entries go to the journal socket (here a socket
    of the test's, named by CHUTE_JOURNAL_SOCKET), each with CHUTE_QUEUE_ID= when it has one."""

    def setUp(self):
        import tempfile
        self.sock_dir = tempfile.mkdtemp(prefix="chute-journal-")
        self.sock_path = os.path.join(self.sock_dir, "socket")
        self.journal = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.journal.bind(self.sock_path)
        self.journal.settimeout(0.2)
        self.addCleanup(self.journal.close)
        super().setUp()

    def environment(self):
        st = os.fstat(self.log.fileno())
        return {**super().environment(), "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}",
                "CHUTE_JOURNAL_SOCKET": self.sock_path}

    def entries(self):
        out = []
        while True:
            try:
                data = self.journal.recv(1 << 17)
            except socket.timeout:
                return out
            fields = {}
            for line in data.decode().split("\n"):
                if "=" in line:
                    key, value = line.split("=", 1)
                    fields[key] = value
            out.append(fields)

    def test_entries_carry_the_queue_id_as_a_field(self):
        # The socket holds few datagrams (net.unix.max_dgram_qlen, 10 by default) and chuted
        # never waits for it: the start-up lines are read before the message goes.
        entries = self.entries()
        a = self.send(["here@example.test"], "journal-a")
        self.settle(30)
        wait_until(lambda: entries.extend(self.entries()) or
                   any(e.get("CHUTE_EVENT") == "delivery" for e in entries),
                   "the delivery entry", 20)
        mine = [e for e in entries if e.get("CHUTE_QUEUE_ID") == a]
        self.assertEqual(sorted(e["CHUTE_EVENT"] for e in mine), ["delivery", "message.accepted"])
        for e in mine:
            self.assertEqual(e["PRIORITY"], "6")
            self.assertEqual(e["SYSLOG_IDENTIFIER"], "chuted")
            self.assertIn(f"queue_id={a}", e["MESSAGE"])
        # Nothing went to stderr: the journal took it.
        self.assertNotIn("event=message.accepted", self.read_log())


class TrafficMetricsTest(TraceFixture):
    def test_refusals_latencies_tenants_queue_and_build_are_exported(self):
        self.send(["here@example.test", "gone@example.test"], "metrics-a")
        with smtplib.SMTP("127.0.0.1", self.port, timeout=30) as c:
            c.ehlo("client.example.test")
            c.mail("app@example.test")
            code, _ = c.rcpt("x@elsewhere.test")
            self.assertEqual(code, 550)
        self.settle(30)
        wait_until(lambda: self.metrics().get(
            'chute_tenant_messages_total{tenant="example.test"}') == 1, "tenant counts", 10)
        m = self.metrics()
        self.assertEqual(m['chute_replies_total{code="550",enhanced="5.7.54"}'], 1)
        self.assertEqual(m['chute_tenant_recipients_total{tenant="example.test"}'], 2)
        self.assertEqual(m["chute_end_of_data_to_reply_seconds_count"], 1)
        self.assertEqual(m['chute_end_of_data_to_reply_seconds_bucket{le="+Inf"}'], 1)
        self.assertGreaterEqual(m["chute_spool_commit_seconds_count"], 1)
        self.assertGreaterEqual(m['chute_delivery_seconds_count{route="default",backend="smtp",'
                                  f'target="127.0.0.1:{self.server.port}"}}'], 1)
        self.assertEqual(m["chute_dead_letters"], 1)
        self.assertEqual(m["chute_queue_oldest_age_seconds"], 0)
        self.assertTrue(any(k.startswith("chute_build_info{version=") for k in m))
        busy = [v for k, v in m.items() if k.startswith("chute_shard_busy_seconds_total{shard=")]
        self.assertEqual(len(busy), self.shards)
        self.assertGreater(sum(busy), 0)  # the loops did some work for these messages
        wait_until(lambda: self.metrics().get("chute_trace_events_written_total", 0) >= 3,
                   "the trace events", 10)


if __name__ == "__main__":
    unittest.main()
