"""Recipient verification at RCPT (verify_recipients) against a running chuted: a Maildir route
accepts only mailboxes that exist and creates none; an SMTP route asks its target (a fake
smarthost here) and passes on its refusal, answering repeats from its cache; an LMTP route asks
a real Dovecot; a target that cannot be asked accepts or defers as verify_unreachable says."""

import os
import signal
import smtplib
import socket
import threading
import time
import unittest

from test_delivery import (DOVECOT_UNKNOWN, DOVECOT_USERS, DeliveryFixture, FakeSmtp,
                           delivery_config, start_dovecot, tags_in, wait_until)
from test_routes import established_to


class RcptMixin:
    def rcpts(self, recipients):
        """[(code, reply)] of each RCPT in one transaction (then RSET)."""
        with smtplib.SMTP("127.0.0.1", self.port, timeout=60) as c:
            c.ehlo("client.example.test")
            code, reply = c.mail("app@example.test")
            self.assertEqual(code, 250, reply)
            out = [c.rcpt(r) for r in recipients]
            c.rset()
            return [(code, reply.decode()) for code, reply in out]


class MaildirVerifyTest(RcptMixin, DeliveryFixture):
    extra_config = "[delivery]\nverify_recipients = true\n"

    def test_only_existing_mailboxes_are_accepted_and_none_is_created(self):
        mailbox = os.path.join(self.dir, "mail", "example.test", "ann")
        os.makedirs(mailbox)
        self.assertEqual(self.rcpts(["ann@example.test", "Ann@Example.TEST", "nobody@example.test"]),
                         [(250, "2.1.5 Recipient OK"), (250, "2.1.5 Recipient OK"),
                          (550, "5.1.1 Recipient address rejected: no such mailbox")])
        self.send(["ann@example.test"], "to-ann")
        self.settle(30)
        self.assertEqual(len(self.messages("ann@example.test")), 1)  # tmp/ new/ cur/ made in it
        self.assertFalse(os.path.exists(os.path.join(self.dir, "mail", "example.test", "nobody")))
        self.assertIn("event=rcpt.refused", self.read_log())

    def test_a_mailbox_removed_after_rcpt_is_a_dead_letter_not_created_again(self):
        mailbox = os.path.join(self.dir, "mail", "example.test", "brief")
        os.makedirs(mailbox)
        with open(os.path.join(self.dir, "hold"), "w"):
            pass
        # Accepted while it exists ...
        with smtplib.SMTP("127.0.0.1", self.port, timeout=60) as c:
            c.ehlo("client.example.test")
            c.mail("app@example.test")
            self.assertEqual(c.rcpt("brief@example.test")[0], 250)
            os.rmdir(mailbox)  # ... and gone before delivery
            code, _ = c.data(b"From: <app@example.test>\r\nSubject: t\r\n\r\nhi\r\n")
            self.assertEqual(code, 250)
        self.settle(30)
        dead = self.queue("queue", "dead")
        self.assertEqual(len(dead), 1, dead)
        self.assertEqual(dead[0]["recipients"][0]["reply"],
                         "550 5.1.1 <brief@example.test>: no such mailbox")
        self.assertFalse(os.path.exists(mailbox))


class MaildirShadowTest(DeliveryFixture):
    """An HVE account's address or alias may not be an existing mailbox (whatever
    verify_recipients says: a Maildir folder is a mailbox)."""

    def test_an_alias_or_address_that_is_a_mailbox_is_refused_unless_told(self):
        os.makedirs(os.path.join(self.dir, "mail", "example.test", "ann", "new"))
        refused = self.ctl("account", "set", "app@example.test", "--add-alias", "ann@example.test",
                           check=False)
        self.assertEqual(refused.returncode, 2, refused.stdout)
        self.assertIn("ann@example.test is a mailbox (route default, maildir:", refused.stderr)
        self.assertIn("--no-mailbox-check", refused.stderr)
        created = self.ctl("account", "new", "--name", "Ann's app", "--primary-smtp-address",
                           "Ann@example.test", "--no-password", check=False)
        self.assertEqual(created.returncode, 2, created.stdout)
        moved = self.ctl("account", "set", "hve2@example.test", "--primary-smtp-address",
                         "ann@example.test", check=False)
        self.assertEqual(moved.returncode, 2, moved.stdout)
        shown = self.queue("account", "show", "app@example.test")
        self.assertNotIn("ann@example.test", shown["aliases"])
        # A name that is no mailbox goes through; and the operator may insist.
        self.ctl("account", "set", "app@example.test", "--add-alias", "reports@example.test")
        self.ctl("account", "set", "app@example.test", "--add-alias", "ann@example.test",
                 "--no-mailbox-check")
        self.assertIn("ann@example.test", self.queue("account", "show", "app@example.test")["aliases"])


class SmtpVerifyTest(RcptMixin, DeliveryFixture):
    def setUp(self):
        self.server = FakeSmtp()
        self.addCleanup(self.server.stop)
        self.server.reject["gone@example.test"] = (
            "550 5.1.1 <gone@example.test>: Recipient address rejected: User unknown in virtual "
            "mailbox table")
        # The HVE accounts the fixture makes are no mailboxes there, as downstream.
        for account in ("app@example.test", "hve2@example.test", "alias@example.test"):
            self.server.reject[account] = "550 5.1.1 no such user"
        self.extra_config = delivery_config("smtp", f"127.0.0.1:{self.server.port}",
                                            verify_recipients=True)
        super().setUp()

    def test_the_targets_refusal_comes_back_at_rcpt_and_repeats_come_from_the_cache(self):
        first = self.rcpts(["gone@example.test", "here@example.test"])
        self.assertEqual(first[0], (550, "5.1.1 <gone@example.test>: Recipient address rejected: "
                                         "User unknown in virtual mailbox table"))
        self.assertEqual(first[1][0], 250)
        again = self.rcpts(["gone@example.test", "here@example.test"] * 5)
        self.assertEqual([code for code, _ in again], [550, 250] * 5)
        with self.server.lock:
            probes = list(self.server.rcpts_seen)
        # One probe each (after chutectl's, which asked about the fixture's accounts).
        self.assertEqual(probes[-2:], ["gone@example.test", "here@example.test"])
        self.assertEqual(len(probes), 5, probes)
        queue_id = self.send(["here@example.test"], "verified")
        self.settle(30)
        self.assertEqual(self.server.deliveries(), [("verified", "here@example.test")])
        self.assertEqual(self.queue("queue", "dead"), [])
        metrics = self.metrics()
        self.assertEqual(metrics['chute_recipient_verifications_total{route="default",'
                                 'result="unknown"}'], 1)
        self.assertEqual(metrics['chute_recipient_verifications_total{route="default",'
                                 'result="exists"}'], 1)
        # From the cache: gone@ five times, here@ once per transaction (a repeat within one is
        # the same recipient) and once more for the message sent.
        self.assertEqual(metrics['chute_recipient_verifications_total{route="default",'
                                 'result="cached"}'], 7)
        self.assertTrue(queue_id)

    def test_an_alias_its_target_knows_is_refused_and_one_it_refuses_is_added(self):
        refused = self.ctl("account", "set", "app@example.test", "--add-alias", "here@example.test",
                           check=False)
        self.assertEqual(refused.returncode, 2, refused.stdout)
        self.assertIn("here@example.test is a mailbox (route default, smtp:", refused.stderr)
        self.ctl("account", "set", "app@example.test", "--add-alias", "gone@example.test")


class UnreachableVerifyFixture(RcptMixin, DeliveryFixture):
    unreachable = "accept"

    def setUp(self):
        self.down = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.down.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
        self.addCleanup(self.down.close)
        self.extra_config = delivery_config(
            "smtp", f"127.0.0.1:{self.down.getsockname()[1]}", verify_recipients=True,
            verify_unreachable=self.unreachable, verify_timeout_s=5)
        super().setUp()


class UnreachableAcceptTest(UnreachableVerifyFixture):
    def test_a_target_that_cannot_be_asked_accepts_and_says_so_in_the_log(self):
        self.assertEqual(self.rcpts(["x@example.test"])[0][0], 250)
        self.assertIn("event=rcpt.unverified", self.read_log())


class UnreachableDeferTest(UnreachableVerifyFixture):
    unreachable = "defer"

    def test_an_alias_that_cannot_be_checked_is_added_with_a_warning(self):
        added = self.ctl("account", "set", "app@example.test", "--add-alias", "x@example.test")
        self.assertIn("could not tell whether x@example.test is a mailbox", added.stderr)
        self.assertIn("Connection refused", added.stderr)
        self.assertIn("x@example.test", self.queue("account", "show", "app@example.test")["aliases"])

    def test_a_target_that_cannot_be_asked_defers_with_450(self):
        self.assertEqual(self.rcpts(["x@example.test"]),
                         [(450, "4.1.1 Recipient address cannot be verified now, try again "
                                "later")])
        metrics = self.metrics()
        self.assertEqual(metrics['chute_recipient_verifications_total{route="default",'
                                 'result="unreachable"}'], 1)


class BlackHoleVerifyTest(RcptMixin, DeliveryFixture):
    """A target that takes connections and never answers: the first new address waits one
    verify_timeout_s, and the addresses after it, for verify_timeout_s, are answered at once
    without another connection; chuted stops cleanly while a probe hangs."""

    def setUp(self):
        self.hole = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.hole.bind(("127.0.0.1", 0))
        self.hole.listen(64)  # never accepted here: connections complete, no greeting comes
        self.hole.setblocking(False)
        self.addCleanup(self.hole.close)
        self.extra_config = delivery_config(
            "smtp", f"127.0.0.1:{self.hole.getsockname()[1]}", verify_recipients=True,
            verify_unreachable="defer", verify_timeout_s=2)
        super().setUp()
        self.connections()  # chutectl's own probes, while the fixture made the accounts

    def connections(self):
        """Connections made to the hole since the last call."""
        count = 0
        while True:
            try:
                conn, _ = self.hole.accept()
            except BlockingIOError:
                return count
            conn.close()
            count += 1

    def test_a_burst_of_new_addresses_costs_one_probe_and_stop_does_not_wait_for_a_hung_one(self):
        answers = self.rcpts([f"new{i}@example.test" for i in range(5)])
        self.assertEqual([code for code, _ in answers], [450] * 5, answers)
        self.assertEqual(self.connections(), 1)
        metrics = self.metrics()
        self.assertEqual(metrics['chute_recipient_verifications_total{route="default",'
                                 'result="unreachable"}'], 5)
        # Past the hold the route is asked again; SIGTERM while that probe hangs.
        time.sleep(2.2)
        result = {}

        def late():
            try:
                result["answers"] = self.rcpts(["late@example.test"])
            except Exception as e:  # noqa: BLE001 (chuted closing the session is an answer)
                result["error"] = repr(e)

        client = threading.Thread(target=late)
        client.start()
        wait_until(lambda: self.metrics().get(
            'chute_recipient_verifications_total{route="default",result="unreachable"}') == 5
            and established_to(self.hole.getsockname()[1]) >= 1, "the late probe's connection", 10)
        self.proc.send_signal(signal.SIGTERM)
        self.assertEqual(self.proc.wait(timeout=30), 0, self.read_log())
        client.join(30)
        self.assertFalse(client.is_alive())
        self.assertTrue(result, "the late RCPT got no answer")


class DovecotVerifyTest(RcptMixin, DeliveryFixture):
    def setUp(self):
        self.lmtp_port, self.dovecot_mail = start_dovecot(self)
        self.extra_config = delivery_config("lmtp", f"127.0.0.1:{self.lmtp_port}",
                                            verify_recipients=True)
        super().setUp()

    def test_dovecots_unknown_users_are_refused_at_rcpt_with_its_reason(self):
        answers = self.rcpts(DOVECOT_USERS[:3] + DOVECOT_UNKNOWN[:3])
        self.assertEqual([code for code, _ in answers], [250] * 3 + [550] * 3)
        for code, reply in answers[3:]:
            self.assertTrue(reply.startswith("5.1.1 "), reply)
            self.assertIn("User doesn't exist", reply)
        self.send(DOVECOT_USERS[:3], "dovecot-verified")
        self.settle(60)
        for address in DOVECOT_USERS[:3]:
            local, domain = address.split("@")
            new = os.path.join(self.dovecot_mail, domain, local, "new")
            wait_until(lambda: os.path.isdir(new) and os.listdir(new), f"{address}'s copy", 30)
            with open(os.path.join(new, os.listdir(new)[0]), "rb") as f:
                self.assertEqual(tags_in(f.read()), [b"dovecot-verified"])
        self.assertEqual(self.queue("queue", "dead"), [])


if __name__ == "__main__":
    unittest.main()
