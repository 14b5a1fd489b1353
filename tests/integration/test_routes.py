"""Delivery routes against a running chuted: [[delivery.route]] sends each domain's mail to its
own targets, with its own queue; a message that spans routes is delivered by each; targets are
tried in order of preference; --check-config names every domain's route; default_route = false
refuses an unrouted domain at RCPT; a black-holed route does not hold up another.

The fixture's tenant accepts example.test (the default route here) and corp.test (route
"corp")."""

import os
import smtplib
import socket
import subprocess
import time
import unittest

from chute_fixture import CHUTED
from test_delivery import DeliveryFixture, FakeSmtp, delivery_config, toml_lines, wait_until


def route_table(name, backend, targets, domains=(), tenants=(), **keys):
    settings = {"name": name, "backend": backend, "targets": list(targets)}
    if domains:
        settings["domains"] = list(domains)
    if tenants:
        settings["tenants"] = list(tenants)
    return "\n".join(["[[delivery.route]]"] + toml_lines({**settings, **keys})) + "\n"


class BlackHole:
    """A listening socket nobody accepts on: connections complete, no greeting ever comes."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]

    def close(self):
        self.sock.close()


def refused_port():
    """A port with nothing listening (bound, so that nothing else takes it meanwhile)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    return s, s.getsockname()[1]


class TwoRoutesTest(DeliveryFixture):
    def setUp(self):
        self.default_server = FakeSmtp()
        self.addCleanup(self.default_server.stop)
        # The HVE accounts the fixture makes are no mailboxes there, as downstream.
        for account in ("app@example.test", "hve2@example.test", "alias@example.test"):
            self.default_server.reject[account] = "550 5.1.1 no such user"
        self.corp_server = FakeSmtp()
        self.addCleanup(self.corp_server.stop)
        self.corp_server.reject["gone@corp.test"] = "550 5.1.1 <gone@corp.test>: User unknown"
        self.down, down_port = refused_port()
        self.addCleanup(self.down.close)
        self.extra_config = (
            delivery_config("smtp", f"127.0.0.1:{self.default_server.port}",
                            verify_recipients=True) + "\n" +
            route_table("corp", "smtp",
                        [f"127.0.0.1:{down_port}", f"127.0.0.1:{self.corp_server.port}"],
                        domains=["corp.test"], tls="off", retry_initial_s=1, retry_max_s=2,
                        timeout_s=10,
                        # a route inherits [delivery]'s verify_recipients: this one must take
                        # gone@corp.test at RCPT, to fail it at delivery
                        verify_recipients=False))
        super().setUp()

    def test_each_domain_goes_to_its_routes_target_and_a_message_spanning_both_to_each(self):
        a = self.send(["here@example.test"], "only-default")
        b = self.send(["ann@corp.test"], "only-corp")
        c = self.send(["both@example.test", "bob@corp.test"], "spanning")
        self.settle(30)
        self.assertEqual(sorted(self.default_server.deliveries()),
                         [("only-default", "here@example.test"), ("spanning", "both@example.test")])
        # corp's first target refuses connections: its second one took the mail.
        self.assertEqual(sorted(self.corp_server.deliveries()),
                         [("only-corp", "ann@corp.test"), ("spanning", "bob@corp.test")])
        self.assertEqual(self.queue("queue", "list"), [])
        log = self.read_log()
        self.assertIn(f"queue_id={b} recipient=ann@corp.test route=corp", log)
        self.assertIn(f"queue_id={a} recipient=here@example.test route=default", log)
        self.assertIn("event=delivery.target_down", log)
        metrics = self.metrics()
        corp = [k for k in metrics if k.startswith("chute_delivery_recipients_delivered_total{"
                                                  'route="corp",backend="smtp"')]
        self.assertEqual(len(corp), 1, corp)
        self.assertEqual(metrics[corp[0]], 2)
        trace = wait_until(lambda: (lambda t: t if "corp smtp:" in t else None)(
            self.ctl("--json", "trace", "--queue-id", c, "--details").stdout),
            "the trace of the spanning message", 20, 0.2)
        self.assertIn(f"corp smtp:127.0.0.1:{self.corp_server.port}: 250", trace)
        self.assertIn(f"default smtp:127.0.0.1:{self.default_server.port}: 250", trace)

    def test_a_failure_on_one_route_dead_letters_only_its_recipient_once(self):
        queue_id = self.send(["fine@example.test", "gone@corp.test", "ok@corp.test"], "dead")
        self.settle(30)
        dead = self.queue("queue", "dead")
        self.assertEqual(len(dead), 1, dead)
        self.assertEqual(dead[0]["id"], queue_id)
        self.assertEqual([(r["address"], r["route"]) for r in dead[0]["recipients"]],
                         [("gone@corp.test", "corp")])
        self.assertIn("(route corp)", self.ctl("queue", "dead").stdout)
        self.assertEqual(sorted(r for _, r in self.default_server.deliveries()),
                         ["fine@example.test"])
        self.assertEqual(sorted(r for _, r in self.corp_server.deliveries()), ["ok@corp.test"])

    def test_queue_lists_a_waiting_part_under_its_route(self):
        with self.corp_server.lock:
            self.corp_server.defer_all = "451 4.3.0 try later"
        queue_id = self.send(["x@example.test", "y@corp.test"], "waiting")
        entry = self.wait_attempted(queue_id)
        self.assertEqual(entry["route"], "corp")
        self.assertEqual([r["address"] for r in entry["recipients_pending"]], ["y@corp.test"])
        text = self.ctl("queue", "list").stdout
        self.assertIn("ROUTE", text)
        self.assertRegex(text, rf"{queue_id}\s+corp\s")
        self.assertEqual(self.default_server.deliveries(), [("waiting", "x@example.test")])
        with self.corp_server.lock:
            self.corp_server.defer_all = None
        self.assertEqual(self.ctl("queue", "retry", queue_id).returncode, 0)
        self.settle(30)
        self.assertEqual(self.corp_server.deliveries(), [("waiting", "y@corp.test")])

    def test_a_sigkill_while_one_route_waits_delivers_each_recipient_once_after_restart(self):
        from test_spool import kill_and_restart
        with self.corp_server.lock:
            self.corp_server.defer_all = "451 4.3.0 try later"
        queue_id = self.send(["x@example.test", "y@corp.test"], "killed")
        self.wait_attempted(queue_id)  # the default route's part is delivered and marked
        self.assertEqual(self.default_server.deliveries(), [("killed", "x@example.test")])
        kill_and_restart(self)
        with self.corp_server.lock:
            self.corp_server.defer_all = None
        self.assertEqual(self.ctl("queue", "retry", queue_id).returncode, 0)
        self.settle(30)
        # The replayed record brought back only the pending recipient, for its own route.
        self.assertEqual(self.corp_server.deliveries(), [("killed", "y@corp.test")])
        self.assertEqual(self.default_server.deliveries(), [("killed", "x@example.test")])

    def test_check_config_names_the_route_of_every_accepted_domain(self):
        result = subprocess.run([CHUTED, "--config", self.config, "--check-config"],
                                capture_output=True, text=True, timeout=60)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn('domain corp.test (tenant example.test): route "corp" (by domain) -> smtp:',
                      result.stdout)
        self.assertIn('domain example.test (tenant example.test): route "default" -> smtp:',
                      result.stdout)


class OnlyRoutesFixture(DeliveryFixture):
    """default_route = false and one route "corp" to a fake server, serving `serves`."""
    serves = {}

    def setUp(self):
        self.corp_server = FakeSmtp()
        self.addCleanup(self.corp_server.stop)
        self.extra_config = (
            "[delivery]\ndefault_route = false\n\n" +
            route_table("corp", "smtp", [f"127.0.0.1:{self.corp_server.port}"], tls="off",
                        **self.serves))
        super().setUp()


class NoDefaultRouteTest(OnlyRoutesFixture):
    serves = {"tenants": ["example.test"]}

    def test_a_tenants_route_serves_its_domains_and_an_unrouted_domain_is_refused_451(self):
        # The tenant's route serves both of its domains ...
        self.send(["a@example.test", "b@corp.test"], "by-tenant")
        self.settle(30)
        self.assertEqual(sorted(r for _, r in self.corp_server.deliveries()),
                         ["a@example.test", "b@corp.test"])
        # ... and a domain added later, which the route does serve (it names the tenant).
        self.ctl("tenant", "set", "example.test", "--add-domain", "new.test")
        result = subprocess.run([CHUTED, "--config", self.config, "--check-config"],
                                capture_output=True, text=True, timeout=60)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn('domain new.test (tenant example.test): route "corp" (by tenant '
                      'example.test)', result.stdout)

    def test_check_config_fails_on_a_domain_no_route_serves(self):
        self.ctl("tenant", "add", "other.test", "--domain", "other.test")
        self.ctl("account", "new", "--tenant", "other.test", "--name", "Other",
                 "--primary-smtp-address", "app@other.test", "--no-password")
        result = subprocess.run([CHUTED, "--config", self.config, "--check-config"],
                                capture_output=True, text=True, timeout=60)
        self.assertEqual(result.returncode, 2, result.stdout)
        self.assertIn("no delivery route serves other.test (tenant other.test)", result.stderr)


class UnroutedRecipientTest(OnlyRoutesFixture):
    """A route for one of the tenant's two domains, and no default route: the other domain's
    recipients get 451 4.3.5 at RCPT."""
    serves = {"domains": ["corp.test"]}

    def test_rcpt_in_an_unrouted_domain_is_refused_451_4_3_5(self):
        self.assertIn("no delivery route serves example.test", self.read_log())
        with smtplib.SMTP("127.0.0.1", self.port, timeout=30) as c:
            c.ehlo("client.example.test")
            c.mail("app@example.test")
            code, reply = c.rcpt("x@example.test")
            self.assertEqual((code, reply), (451, b"4.3.5 No delivery route for this domain"))
            code, _ = c.rcpt("y@corp.test")
            self.assertEqual(code, 250)


class BlackHoledRouteTest(DeliveryFixture):
    """One route's target accepts connections and never answers: only that route's messages
    wait; the other route's go through. The end-to-end latency of the healthy route is printed
    (a figure for the record; it is not asserted)."""

    def setUp(self):
        self.default_server = FakeSmtp()
        self.addCleanup(self.default_server.stop)
        # The HVE accounts the fixture makes are no mailboxes there, as downstream.
        for account in ("app@example.test", "hve2@example.test", "alias@example.test"):
            self.default_server.reject[account] = "550 5.1.1 no such user"
        self.hole = BlackHole()
        self.addCleanup(self.hole.close)
        self.extra_config = (
            delivery_config("smtp", f"127.0.0.1:{self.default_server.port}",
                            verify_recipients=True) + "\n" +
            route_table("corp", "smtp", [f"127.0.0.1:{self.hole.port}"], domains=["corp.test"],
                        tls="off", timeout_s=120, connections_max=4))
        super().setUp()

    def latencies(self, count, tag):
        out = []
        for i in range(count):
            started = time.monotonic()
            self.send([f"u{i}@example.test"], f"{tag}-{i}")
            wait_until(lambda: (f"{tag}-{i}", f"u{i}@example.test") in
                       self.default_server.deliveries(), f"{tag}-{i} delivered", 30, 0.002)
            out.append(time.monotonic() - started)
        return sorted(out)

    def test_a_black_holed_route_fills_only_its_own_queue(self):
        before = self.latencies(20, "before")
        stuck = [self.send([f"c{i}@corp.test"], f"stuck-{i}") for i in range(8)]
        wait_until(lambda: sum(1 for e in self.queue("queue", "list") if e["in_flight"]) >= 4,
                   "the black-holed route's workers to be waiting on it", 30)
        during = self.latencies(20, "during")
        entries = {e["id"]: e for e in self.queue("queue", "list")}
        self.assertEqual(sorted(entries), sorted(stuck))  # only corp's messages wait
        self.assertTrue(all(e["route"] == "corp" for e in entries.values()))
        self.assertEqual(len(self.default_server.deliveries()), 40)
        print(f"\nhealthy route, submit to delivered: p50 {before[10] * 1e3:.1f} ms before, "
              f"{during[10] * 1e3:.1f} ms with the other route black-holed "
              f"(p90 {before[17] * 1e3:.1f} / {during[17] * 1e3:.1f} ms)")


def established_to(port):
    """Connections to 127.0.0.1:`port` that the kernel completed (accepted or still in the
    listener's backlog), from /proc/net/tcp."""
    count = 0
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            local, state = fields[1], fields[3]
            if state == "01" and int(local.split(":")[1], 16) == port:
                count += 1
    return count


def thread_names(pid):
    names = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/comm") as f:
                names.append(f.read().strip())
        except OSError:
            pass  # a thread that just ended
    return names


class ConnectionsAreNotThreadsTest(DeliveryFixture):
    """Every LMTP/SMTP route's connections run on the delivery I/O thread: a route holding 12
    connections to a target that never answers, and another route delivering meanwhile (and
    verifying its recipients at RCPT), take one such thread and no thread per connection or
    per verifier."""

    def setUp(self):
        self.default_server = FakeSmtp()
        self.addCleanup(self.default_server.stop)
        # The HVE accounts the fixture makes are no mailboxes there, as downstream.
        for account in ("app@example.test", "hve2@example.test", "alias@example.test"):
            self.default_server.reject[account] = "550 5.1.1 no such user"
        self.hole = BlackHole()
        self.addCleanup(self.hole.close)
        self.extra_config = (
            delivery_config("smtp", f"127.0.0.1:{self.default_server.port}",
                            verify_recipients=True) + "\n" +
            route_table("corp", "smtp", [f"127.0.0.1:{self.hole.port}"], domains=["corp.test"],
                        tls="off", timeout_s=120, connections_max=12, batch_messages_max=1,
                        verify_recipients=False))
        super().setUp()

    def test_twelve_waiting_connections_and_a_healthy_route_share_one_io_thread(self):
        for i in range(12):
            self.send([f"c{i}@corp.test"], f"stuck-{i}")
        wait_until(lambda: established_to(self.hole.port) >= 12,
                   "12 connections to the black-holed target", 30)
        self.send(["here@example.test"], "healthy")
        wait_until(lambda: ("healthy", "here@example.test") in self.default_server.deliveries(),
                   "the healthy route's message delivered", 30)
        self.assertEqual(established_to(self.hole.port), 12)  # connections_max, no more
        entries = self.queue("queue", "list")
        self.assertEqual(sum(1 for e in entries if e["in_flight"]), 12)
        names = thread_names(self.proc.pid)
        # No Maildir writer (chute-deliver-N), no thread per connection and none for the
        # recipient verifier (chute-verify-<route>; chute-verify is a password verifier): one
        # I/O thread.
        self.assertEqual(sorted(n for n in names if n.startswith(("chute-deliv", "chute-dlv"))),
                         ["chute-dlvio-0"], names)
        self.assertEqual([n for n in names if n.startswith("chute-verify-")], [], names)
        probed = sum(v for k, v in self.metrics().items()
                     if k.startswith("chute_recipient_verifications_total{")
                     and 'result="exists"' in k)
        self.assertEqual(probed, 1)  # here@example.test, probed on that thread


if __name__ == "__main__":
    unittest.main()
