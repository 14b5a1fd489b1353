"""The admin listener's /metrics, scraped from the real chuted after real traffic (a message
accepted, a recipient and a message refused) and checked by Prometheus's own `promtool check
metrics` (Debian's prometheus package): it must parse and pass promtool's lint with no
finding at all. Skips when promtool is not installed.

Also the Grafana dashboard (deploy/grafana-dashboard.json): every metric its queries use is
one this chuted exports or one of the issue-10 names below, so renaming a metric breaks this
test; its PromQL parses (promtool check rules); every panel uses the ${DS_PROMETHEUS} variable.
"""

import json
import os
import re
import shutil
import smtplib
import subprocess
import tempfile
import unittest
import time
import urllib.request

from chute_fixture import HERE, ChutedFixture

PROMTOOL = shutil.which("promtool")
DASHBOARD = os.path.join(HERE, "..", "..", "deploy", "grafana-dashboard.json")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")

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


class LiveMetricsFixture(ChutedFixture):
    """chuted after the traffic, its /metrics scraped once."""

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
        # Per-tenant counts reach the metrics with the shards' once-a-second hand-over.
        deadline = time.monotonic() + 10
        while True:
            status, headers, body = self.admin_request("/metrics")
            self.assertEqual(status, 200)
            self.content_type = headers["Content-Type"]
            self.text = body.decode()
            self.types, self.samples = parse_exposition(self.text)
            if ("chute_tenant_messages_total" not in self.types or
                    self.total("chute_tenant_messages_total") >= 1 or
                    time.monotonic() > deadline):
                break
            time.sleep(0.1)

    def total(self, name, **labels):
        return sum(v for n, l, v in self.samples
                   if n == name and all(l.get(k) == w for k, w in labels.items()))


class MetricsTest(LiveMetricsFixture):
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


def dashboard_queries(dashboard):
    """Every PromQL expression of the dashboard: panel targets (rows' nested panels too) and
    templating queries."""
    out = []

    def walk(panels):
        for panel in panels:
            out.extend(t["expr"] for t in panel.get("targets", []) if "expr" in t)
            walk(panel.get("panels", []))

    walk(dashboard["panels"])
    for variable in dashboard["templating"]["list"]:
        query = variable.get("query")
        if variable["type"] == "query":
            out.append(query["query"] if isinstance(query, dict) else query)
    return out


def metric_names(expr):
    """The chute_* metric names an expression uses (label names and values removed)."""
    without_labels = re.sub(r"\{[^}]*\}", "", expr)
    without_strings = re.sub(r'"[^"]*"', "", without_labels)
    return set(re.findall(r"\bchute_[a-z0-9_]+", without_strings))


def family_of(name, families):
    """The family a sample name belongs to (histogram _bucket/_sum/_count to its family)."""
    if name in families:
        return name
    for suffix in HISTOGRAM_SUFFIXES:
        if name.endswith(suffix) and families.get(name[:-len(suffix)]) == "histogram":
            return name[:-len(suffix)]
    return None


class DashboardTest(LiveMetricsFixture):
    def setUp(self):
        super().setUp()
        with open(DASHBOARD) as f:
            self.dashboard = json.load(f)
        self.queries = dashboard_queries(self.dashboard)

    def test_every_metric_is_exported(self):
        families = dict(ISSUE10_FAMILIES)
        families.update(self.types)
        used = set()
        for expr in self.queries:
            for name in metric_names(expr):
                family = family_of(name, families)
                self.assertIsNotNone(family, f"{name} in {expr!r} is not a chute metric")
                used.add(family)
                if name.endswith("_bucket"):
                    self.assertEqual(families[family], "histogram", expr)
                if "rate(" in expr and family == name:
                    self.assertEqual(families[family], "counter", f"rate() of {name}")
        # The issue's list of panels: each metric it names is on the dashboard.
        self.assertEqual(set(ISSUE10_FAMILIES) - used, set())
        self.assertEqual(set(BASE_FAMILIES) - {"chute_recv_starved_max_seconds"} - used, set())

    def test_queries_parse(self):
        rules = {"groups": [{"name": "dashboard", "rules": []}]}
        for i, expr in enumerate(self.queries):
            if expr.startswith("label_values("):
                continue  # Grafana's templating function, not PromQL
            promql = expr.replace("$__rate_interval", "5m").replace("$instance", ".*")
            rules["groups"][0]["rules"].append({"record": f"dashboard:query{i}", "expr": promql})
        self.assertGreater(len(rules["groups"][0]["rules"]), 20)
        with tempfile.NamedTemporaryFile("w", suffix=".yml", dir=self.dir, delete=False) as f:
            json.dump(rules, f)  # JSON is YAML
        result = subprocess.run([PROMTOOL, "check", "rules", f.name], capture_output=True,
                                text=True, timeout=60)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)

    def test_panels_use_the_datasource_variable(self):
        names = [v["name"] for v in self.dashboard["templating"]["list"]]
        self.assertIn("DS_PROMETHEUS", names)
        ids = set()
        for panel in self.dashboard["panels"]:
            self.assertNotIn(panel["id"], ids)
            ids.add(panel["id"])
            if panel["type"] == "row":
                continue
            self.assertEqual(panel["datasource"]["uid"], "${DS_PROMETHEUS}", panel["title"])
            for target in panel["targets"]:
                self.assertEqual(target["datasource"]["uid"], "${DS_PROMETHEUS}", panel["title"])


if __name__ == "__main__":
    unittest.main()
