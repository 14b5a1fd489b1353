"""The admin listener's /usage page, rendered by a real headless browser (Debian's chromium,
no driver: --dump-dom and --screenshot), against the real chuted after real SMTP traffic.

The numbers in the rendered DOM must be exactly those of `chutectl --json report` for the
same view; the chart's bars must add up to them; names are HTML-escaped; bad parameters are
a 400 that says what is wrong. A screenshot goes to the test's temp directory and is copied
to build/usage-page.png for a person to look at. Skips when chromium is not installed.
"""

import html.parser
import json
import os
import shutil
import signal
import smtplib
import ssl
import subprocess
import tempfile
import time
import unittest
import urllib.error
import urllib.request

from chute_fixture import BIN, ChutedFixture, free_port

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Chromium talks to nobody but the page's loopback listener: no component updates, variations,
# safe browsing, sync, metrics, crash reports or DNS prefetch; any other name resolves to
# nothing, and anything that would still go out goes to a closed loopback port.
OFFLINE = ["--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--disable-default-apps", "--disable-extensions", "--disable-domain-reliability",
           "--disable-client-side-phishing-detection", "--disable-breakpad", "--no-pings",
           "--no-default-browser-check", "--metrics-recording-only", "--disable-quic",
           "--disable-features=OptimizationHints,MediaRouter,Translate,NetworkPrediction,"
           "AutofillServerCommunication,CertificateTransparencyComponentUpdater",
           "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost",
           "--proxy-server=http://127.0.0.1:9", "--proxy-bypass-list=127.0.0.1;localhost"]
CHROMIUM_TIMEOUT_S = 90  # a cold start of chromium on a loaded 2-core machine
BUILD_DIR = os.path.abspath(os.path.join(BIN, ".."))

ODD_ACCOUNT = "o'hara&co@corp.test"  # '&' and "'" are atext: the page must escape them
ODD_PASSWORD = "Usage page password 1"


class UsageDom(html.parser.HTMLParser):
    """Collects the page's stable hooks: table rows, tenant totals, bars, the heading."""

    def __init__(self):
        super().__init__()
        self.rows = []     # {"day", "tenant", "account", "messages", "recipients"}
        self.totals = []   # {"tenant", "messages", "recipients"}
        self.bars = []     # {"day", "series", "value"}
        self.heading = {}
        self.legend = []
        self._row = None
        self._cell = None
        self._text = ""

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        classes = (a.get("class") or "").split()
        if tag == "tr" and "usage-row" in classes:
            self._row = {"day": a["data-day"], "tenant": a["data-tenant"],
                         "account": a["data-account"]}
            self.rows.append(self._row)
        elif tag == "tr" and "tenant-total" in classes:
            self._row = {"tenant": a["data-tenant"]}
            self.totals.append(self._row)
        elif tag == "td" and self._row is not None and ("messages" in classes
                                                        or "recipients" in classes):
            self._cell = "messages" if "messages" in classes else "recipients"
            self._text = ""
        elif tag == "rect" and "bar" in classes:
            self.bars.append({"day": a["data-day"], "series": a["data-series"],
                              "value": int(a["data-value"])})
        elif tag == "h1":
            self.heading = a
        elif tag == "li" and "data-series" in a:
            self.legend.append(a["data-series"])

    def handle_data(self, data):
        if self._cell is not None:
            self._text += data

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            self._row[self._cell] = int(self._text.strip())
            self._cell = None
        elif tag == "tr":
            self._row = None


def client_context():
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the fixture's certificate is self-signed
    return context


class UsagePageTest(ChutedFixture):
    with_tls = True

    def extra_listeners(self):
        # A second trusted listener acting as the fixture's other account: two series.
        self.port2 = free_port()
        return f"""
[[listener]]
address = "127.0.0.1:{self.port2}"
tls = "none"
allowed_networks = ["127.0.0.0/8"]
authenticate_as = "hve2@example.test"
"""

    def url(self, query=""):
        """The page with `query`, as a browser opens it: with the ticket `chutectl report
        --link` makes (the page needs the admin token or a ticket)."""
        if not hasattr(self, "ticket"):
            link = json.loads(self.ctl("--json", "report", "--link").stdout)["url"]
            self.ticket = link.split("ticket=", 1)[1]
        separator = "&" if query else "?"
        return f"http://127.0.0.1:{self.admin_port}/usage{query}{separator}ticket={self.ticket}"

    def send(self, port, count, recipients, login=None):
        for i in range(count):
            with smtplib.SMTP("127.0.0.1", port, timeout=30) as c:
                c.ehlo("client.example.test")
                sender = "app@example.test" if port == self.port else "hve2@example.test"
                if login is not None:
                    c.starttls(context=client_context())
                    c.ehlo("client.example.test")
                    c.login(*login)
                    sender = login[0]
                rcpts = [f"user{n}@example.test" for n in range(recipients)]
                c.sendmail(sender, rcpts,
                           f"From: {sender}\r\nSubject: usage {i}\r\n\r\nhello\r\n".encode())

    def login_odd_account(self):
        """Creates the odd account and waits until chuted's directory has it (SIGHUP)."""
        self.ctl("account", "new", "--tenant", "example.test", "--name", "O'Hara & Co",
                 "--primary-smtp-address", ODD_ACCOUNT, "--password-stdin", stdin=ODD_PASSWORD)
        self.proc.send_signal(signal.SIGHUP)
        end = time.monotonic() + 30
        while True:
            try:
                self.send(self.tls_port, 1, 3, login=(ODD_ACCOUNT, ODD_PASSWORD))
                return
            except smtplib.SMTPException:
                if time.monotonic() > end:
                    raise
                time.sleep(0.2)

    def report(self, *args):
        return json.loads(self.ctl("--json", "report", *args).stdout)

    def wait_usage(self, messages):
        """Waits until the usage counters reached the database (shards hand them over every
        tick; chuted writes them every 2 s and on SIGHUP)."""
        end = time.monotonic() + 30
        while True:
            got = sum(t["messages"] for t in self.report()["tenants"])
            if got == messages:
                return
            if time.monotonic() > end:
                raise AssertionError(f"usage shows {got} messages, expected {messages}")
            self.proc.send_signal(signal.SIGHUP)
            time.sleep(0.2)

    def chromium(self, *args):
        profile = tempfile.mkdtemp(prefix="chromium-", dir=self.dir)
        command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                   "--disable-dev-shm-usage", "--no-first-run", "--hide-scrollbars",
                   f"--user-data-dir={profile}", *OFFLINE, *args]
        return subprocess.run(command, capture_output=True, text=True, check=True,
                              timeout=CHROMIUM_TIMEOUT_S)

    def rendered(self, query):
        dom = UsageDom()
        dom.feed(self.chromium("--dump-dom", self.url(query)).stdout)
        return dom

    def assert_same_as_report(self, dom, report, volume):
        want_rows = [{"day": r["day"], "tenant": r["tenant"], "account": r["account"],
                      "messages": r["messages"], "recipients": r["recipients"]}
                     for r in report["rows"]]
        self.assertEqual(dom.rows, want_rows)
        self.assertEqual(dom.totals, report["tenants"])
        self.assertEqual((dom.heading["data-from"], dom.heading["data-to"]),
                         (report["from"], report["to"]))
        per_day = {}
        for r in report["rows"]:
            per_day[r["day"]] = per_day.get(r["day"], 0) + r[volume]
        bars = {}
        for b in dom.bars:
            bars[b["day"]] = bars.get(b["day"], 0) + b["value"]
        self.assertEqual(bars, {d: v for d, v in per_day.items() if v})

    def setUp(self):
        if CHROMIUM is None:
            self.skipTest("chromium is not installed (tools/install-deps.sh installs it)")
        super().setUp()
        self.send(self.port, 3, 2)    # app@example.test: 3 messages, 6 recipients
        self.send(self.port2, 2, 1)   # hve2@example.test: 2 messages, 2 recipients
        self.login_odd_account()      # 1 message, 3 recipients
        self.wait_usage(6)

    def test_page_shows_the_numbers_of_chutectl_report(self):
        report = self.report()
        self.assertEqual(len(report["rows"]), 3)
        dom = self.rendered("")
        self.assertEqual(dom.heading["data-volume"], "recipients")
        self.assertEqual(sorted(dom.legend), sorted(
            f"{r['account']} ({r['tenant']})" for r in report["rows"]))
        self.assert_same_as_report(dom, report, "recipients")
        self.assertIn(ODD_ACCOUNT, [r["account"] for r in dom.rows])

        for query, args, volume in [
                ("?volume=messages&days=30", ["--days", "30"], "messages"),
                ("?days=90&tenant=example.test&account=hve2%40example.test",
                 ["--days", "90", "--tenant", "example.test", "--account", "hve2@example.test"],
                 "recipients"),
                (f"?volume=messages&from={report['from']}&to={report['to']}",
                 ["--from", report["from"], "--to", report["to"]], "messages")]:
            with self.subTest(query=query):
                want = self.report(*args)
                self.assertTrue(want["rows"])
                self.assert_same_as_report(self.rendered(query), want, volume)

    def test_names_are_escaped(self):
        with urllib.request.urlopen(self.url(), timeout=10) as r:
            self.assertEqual(r.headers["Content-Type"], "text/html; charset=utf-8")
            # Nothing loaded from elsewhere and no script may run, should a name slip through.
            self.assertIn("default-src 'none'", r.headers["Content-Security-Policy"])
            self.assertEqual(r.headers["X-Content-Type-Options"], "nosniff")
            body = r.read().decode()
        self.assertIn("o&#39;hara&amp;co@corp.test", body)
        self.assertNotIn(ODD_ACCOUNT, body)
        self.assertNotIn("<script", body.lower())
        # A filter value is reflected in the page: escaped too.
        with urllib.request.urlopen(self.url("?tenant=%3Cb%3Ex%22"), timeout=10) as r:
            body = r.read().decode()
        self.assertIn("&lt;b&gt;x&quot;", body)
        self.assertNotIn("<b>x", body)

    def test_bad_parameters_are_400_with_a_reason(self):
        for query, reason in [("?days=5", "days is 7, 30 or 90"),
                              ("?volume=bytes", "volume is recipients or messages"),
                              ("?from=2026-01-01", "give from and to together"),
                              ("?from=2026-02-30&to=2026-03-01", "are dates YYYY-MM-DD"),
                              ("?from=2026-03-02&to=2026-03-01", "not after"),
                              ("?from=2024-01-01&to=2025-01-01", "longer than 366 days"),
                              ("?days=7&days=30", "given twice"),
                              ("?colour=red", "unknown parameter 'colour'"),
                              ("?tenant=%zz", "badly encoded")]:
            with self.subTest(query=query):
                with self.assertRaises(urllib.error.HTTPError) as caught:
                    urllib.request.urlopen(self.url(query), timeout=10)
                self.assertEqual(caught.exception.code, 400)
                self.assertIn(reason, caught.exception.read().decode())
        # A whole leap year is the longest range.
        with urllib.request.urlopen(self.url("?from=2024-01-01&to=2024-12-31"), timeout=10) as r:
            self.assertEqual(r.status, 200)

    def test_screenshot(self):
        shot = os.path.join(self.dir, "usage-page.png")
        self.chromium(f"--screenshot={shot}", "--window-size=1100,1300", self.url("?days=7"))
        with open(shot, "rb") as f:
            self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")
        os.makedirs(BUILD_DIR, exist_ok=True)
        copy = os.path.join(BUILD_DIR, "usage-page.png")
        shutil.copyfile(shot, copy)
        print(f"\nusage page screenshot: {copy}", flush=True)


if __name__ == "__main__":
    unittest.main()
