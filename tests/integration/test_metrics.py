"""The admin listener's /metrics, scraped from the real chuted after real traffic (a message
accepted, a recipient and a message refused) and checked by Prometheus's own `promtool check
metrics` (Debian's prometheus package): it must parse and pass promtool's lint with no
finding at all. Skips when promtool is not installed.
"""

import shutil
import smtplib
import subprocess
import unittest
import urllib.request

from chute_fixture import ChutedFixture

PROMTOOL = shutil.which("promtool")

# The metric families the dashboard (deploy/grafana-dashboard.json) is built on that every
# chuted exports since before issue 10.
BASE_FAMILIES = {
    "chute_connections_accepted_total": "counter",
    "chute_connections_open": "gauge",
    "chute_messages_accepted_total": "counter",
    "chute_spool_messages": "gauge",
    "chute_delivery_queued_messages": "gauge",
    "chute_gate_refused_total": "counter",
    "chute_recv_starved_max_seconds": "gauge",
}
# Added by issue 10 (the request/latency metrics); names fixed, see the dashboard.
ISSUE10_FAMILIES = {
    "chute_replies_total": "counter",
    "chute_end_of_data_to_reply_seconds": "histogram",
    "chute_spool_commit_seconds": "histogram",
    "chute_delivery_seconds": "histogram",
    "chute_tenant_messages_total": "counter",
    "chute_tenant_recipients_total": "counter",
    "chute_queue_oldest_age_seconds": "gauge",
    "chute_dead_letters": "gauge",
    "chute_shard_busy_seconds_total": "counter",
    "chute_build_info": "gauge",
}


def parse_exposition(text):
    """{family: type} and [(name, labels, value)] from the text format (enough for chute's
    output: no escaped quotes or commas inside label values)."""
    types = {}
    samples = []
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            types[name] = kind
        elif line and not line.startswith("#"):
            series, value = line.rsplit(" ", 1)
            name, _, rest = series.partition("{")
            labels = {}
            for pair in filter(None, rest.rstrip("}").split(",")):
                key, _, quoted = pair.partition("=")
                labels[key] = quoted.strip('"')
            samples.append((name, labels, float(value)))
    return types, samples


class MetricsTest(ChutedFixture):
    def setUp(self):
        if PROMTOOL is None:
            self.skipTest("promtool is not installed (tools/install-deps.sh installs prometheus)")
        super().setUp()
        with smtplib.SMTP("127.0.0.1", self.port, timeout=30) as c:
            c.sendmail("app@example.test", ["someone@example.test"],
                       b"From: app@example.test\r\nSubject: ok\r\n\r\nhello\r\n")
            # Outside the tenant's accepted domains: 550 5.7.54, and with no other recipient
            # the whole message is refused.
            with self.assertRaises(smtplib.SMTPRecipientsRefused):
                c.sendmail("app@example.test", ["someone@elsewhere.test"],
                           b"Subject: refused\r\n\r\nhello\r\n")
        self.settle()
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/metrics",
                                    timeout=10) as r:
            self.content_type = r.headers["Content-Type"]
            self.text = r.read().decode()
        self.types, self.samples = parse_exposition(self.text)

    def total(self, name, **labels):
        return sum(v for n, l, v in self.samples
                   if n == name and all(l.get(k) == w for k, w in labels.items()))

    def test_promtool_finds_nothing(self):
        self.assertTrue(self.content_type.startswith("text/plain; version=0.0.4"))
        result = subprocess.run([PROMTOOL, "check", "metrics"], input=self.text,
                                capture_output=True, text=True, timeout=60)
        self.assertEqual((result.returncode, result.stdout + result.stderr), (0, ""),
                         "promtool check metrics:\n" + result.stdout + result.stderr)

    def test_the_traffic_is_counted(self):
        for name, kind in BASE_FAMILIES.items():
            self.assertEqual(self.types.get(name), kind, name)
        self.assertEqual(self.total("chute_messages_accepted_total"), 1)
        self.assertEqual(self.total("chute_spool_messages"), 0)
        self.assertGreaterEqual(self.total("chute_connections_accepted_total"), 1)

    def test_issue10_metrics(self):
        if "chute_build_info" not in self.types:
            self.skipTest("this chuted does not export the issue-10 request metrics yet")
        for name, kind in ISSUE10_FAMILIES.items():
            self.assertEqual(self.types.get(name), kind, name)
        self.assertEqual(self.total("chute_replies_total", code="550", enhanced="5.7.54"), 1)
        self.assertEqual(self.total("chute_tenant_messages_total", tenant="example.test"), 1)
        self.assertEqual(self.total("chute_tenant_recipients_total", tenant="example.test"), 1)
        self.assertEqual(self.total("chute_end_of_data_to_reply_seconds_count"), 1)
        self.assertGreaterEqual(self.total("chute_spool_commit_seconds_count"), 1)
        self.assertGreaterEqual(self.total("chute_delivery_seconds_count", backend="maildir"), 1)
        self.assertEqual(self.total("chute_dead_letters"), 0)
        build = [l for n, l, v in self.samples if n == "chute_build_info" and v == 1]
        self.assertEqual(len(build), 1)
        self.assertTrue(build[0].get("version"))


if __name__ == "__main__":
    unittest.main()
