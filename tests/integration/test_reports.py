"""Failure reports against a running chuted: when chute gives up on recipients (here: the
smarthost refuses them after RCPT was accepted), an RFC 3464 report goes from the null sender
to the account's Reply-To, else to its tenant's notification address, else nowhere (the dead
letter only); it carries the original's header section, not its body; the trace shows it."""

import email
import email.policy
import json
import unittest

from test_delivery import DeliveryFixture, FakeSmtp, delivery_config, wait_until


class ReportFixture(DeliveryFixture):
    def setUp(self):
        self.server = FakeSmtp()
        self.addCleanup(self.server.stop)
        self.server.reject["gone@example.test"] = "550 5.1.1 <gone@example.test>: User unknown"
        self.extra_config = delivery_config("smtp", f"127.0.0.1:{self.server.port}")
        super().setUp()

    def ctl_and_reload(self, *args):
        """chutectl ARGS, then waits until chuted has reloaded the directory (it polls it)."""
        before = self.read_log().count("directory reloaded")
        self.ctl(*args)
        wait_until(lambda: self.read_log().count("directory reloaded") > before,
                   "chuted to reload the directory", 20)

    def reports(self):
        """The messages the smarthost got from the null sender, parsed."""
        with self.server.lock:
            return [(rcpts, email.message_from_bytes(data, policy=email.policy.default))
                    for sender, rcpts, data in self.server.messages if sender in ("<>", "")]


class ReplyToReportTest(ReportFixture):
    def test_a_given_up_recipient_is_reported_to_the_accounts_reply_to(self):
        self.ctl("settings", "set", "app@example.test", "--reply-to", "hr@example.test")
        self.ctl_and_reload("tenant", "set", "example.test", "--notification-address",
                            "ops@example.test")
        queue_id = self.send(["here@example.test", "gone@example.test"], "payslip")
        reports = wait_until(lambda: self.reports() or None, "the failure report", 30)
        self.assertEqual(len(reports), 1)
        rcpts, report = reports[0]
        self.assertEqual(rcpts, ["hr@example.test"])  # the Reply-To wins over the tenant's
        self.assertEqual(report.get_content_type(), "multipart/report")
        self.assertEqual(report.get_param("report-type"), "delivery-status")
        self.assertEqual(report["Auto-Submitted"], "auto-replied")
        parts = list(report.iter_parts())
        self.assertEqual([p.get_content_type() for p in parts],
                         ["text/plain", "message/delivery-status", "text/rfc822-headers"])
        self.assertIn("gone@example.test", parts[0].get_content())
        status = parts[1].as_string()
        self.assertIn("Final-Recipient: rfc822; gone@example.test", status)
        self.assertIn("Action: failed", status)
        self.assertIn("Status: 5.1.1", status)
        self.assertIn("Diagnostic-Code: smtp; 550 5.1.1 <gone@example.test>: User unknown", status)
        self.assertIn(f"X-Chute-Queue-ID: {queue_id}", status)
        self.assertNotIn("here@example.test", status)  # delivered: not in the report
        headers = parts[2].as_string()
        self.assertIn("payslip", headers)  # the tag is in the Subject
        self.assertNotIn("line that starts with a dot", headers)  # the body stays out
        self.settle(30)
        # The trace shows the report on the failed recipient, and the report as a message.
        trace = wait_until(lambda: (lambda t: t if "failure report" in t else None)(
            self.ctl("--json", "trace", "--queue-id", queue_id, "--details").stdout),
            "the report in the trace", 20, 0.2)
        rows = json.loads(trace)
        gone = [r for r in rows if r["recipient"] == "gone@example.test"][0]
        note = [e for e in gone["events"] if e["event"] == "report"][0]
        report_id = note["detail"].split()[2]
        self.assertEqual(note["detail"], f"failure report {report_id} to hr@example.test")
        report_rows = wait_until(lambda: (lambda r: r if r and r[0]["status"] == "delivered"
                                          else None)(
            json.loads(self.ctl("--json", "trace", "--queue-id", report_id).stdout)),
            "the report's own trace", 20, 0.2)
        self.assertEqual(report_rows[0]["recipient"], "hr@example.test")
        self.assertIn("failure report about", report_rows[0]["client"])


class TenantAddressReportTest(ReportFixture):
    def test_without_a_reply_to_the_tenants_notification_address_gets_it(self):
        refused = self.ctl("tenant", "set", "example.test", "--notification-address",
                           "ops@elsewhere.test", check=False)
        self.assertEqual(refused.returncode, 2)
        self.assertIn("not an accepted domain", refused.stderr)
        self.ctl_and_reload("tenant", "set", "example.test", "--notification-address",
                            "ops@example.test")
        shown = json.loads(self.ctl("--json", "tenant", "show", "example.test").stdout)
        self.assertEqual(shown["notification_address"], "ops@example.test")
        self.send(["gone@example.test"], "to-ops")
        reports = wait_until(lambda: self.reports() or None, "the failure report", 30)
        self.assertEqual(reports[0][0], ["ops@example.test"])


class DsnReportTest(ReportFixture):
    """The client's DSN parameters (RFC 3461): NOTIFY decides whether a failure is reported,
    ENVID and ORCPT come back in the report, RET=FULL returns the whole message."""

    def setUp(self):
        super().setUp()
        self.ctl_and_reload("tenant", "set", "example.test", "--notification-address",
                            "ops@example.test")

    def submit(self, mail_options, rcpt_options, tag):
        import smtplib
        from test_delivery import message_body
        with smtplib.SMTP("127.0.0.1", self.port, timeout=30) as c:
            code, reply = c.ehlo("client.example.test")
            self.assertIn(b"\nDSN", reply)
            self.assertEqual(c.mail("app@example.test", options=mail_options)[0], 250)
            self.assertEqual(c.rcpt("gone@example.test", options=rcpt_options)[0], 250)
            self.assertEqual(c.data(message_body(tag))[0], 250)

    def test_notify_never_or_success_only_sends_no_failure_report(self):
        self.submit([], ["NOTIFY=NEVER"], "never")
        self.submit([], ["NOTIFY=SUCCESS"], "success-only")
        self.settle(30)
        self.assertEqual(len(self.queue("queue", "dead")), 2)
        self.submit([], ["NOTIFY=FAILURE,DELAY"], "failure")  # a third, that asks for it
        reports = wait_until(lambda: self.reports() or None, "the failure report", 30)
        self.assertEqual(len(reports), 1)
        headers = list(reports[0][1].iter_parts())[2].as_string()
        self.assertIn("Subject: failure", headers)  # about the one that asked, not the others

    def test_notify_success_to_a_smarthost_without_dsn_is_a_relayed_notice(self):
        self.server.reject.pop("gone@example.test")  # this time it is taken
        self.submit([], ["NOTIFY=SUCCESS"], "relayed")
        notices = wait_until(lambda: self.reports() or None, "the success notice", 30)
        status = list(notices[0][1].iter_parts())[1].as_string()
        self.assertIn("Action: relayed", status)
        self.assertIn("Status: 2.0.0", status)
        self.assertEqual(notices[0][0], ["ops@example.test"])

    def test_envid_orcpt_and_ret_full_come_back_in_the_report(self):
        self.submit(["RET=FULL", "ENVID=QQ314159+2Bpay"],
                    ["NOTIFY=FAILURE", "ORCPT=rfc822;Gone+40Example.test"], "full")
        reports = wait_until(lambda: self.reports() or None, "the failure report", 30)
        parts = list(reports[0][1].iter_parts())
        status = parts[1].as_string()
        self.assertIn("Original-Envelope-Id: QQ314159+2Bpay", status)
        self.assertIn("Original-Recipient: rfc822; Gone@Example.test", status)
        self.assertEqual(parts[2].get_content_type(), "message/rfc822")
        self.assertIn("line that starts with a dot", parts[2].as_string())  # the body too


class DelayNoticeTest(ReportFixture):
    def setUp(self):
        self.server = FakeSmtp()
        self.addCleanup(self.server.stop)
        self.server.reject["slow@example.test"] = "451 4.2.1 mailbox busy, try later"
        self.extra_config = delivery_config("smtp", f"127.0.0.1:{self.server.port}",
                                            delay_notice_after_s=1)
        DeliveryFixture.setUp(self)
        self.ctl_and_reload("tenant", "set", "example.test", "--notification-address",
                            "ops@example.test")

    def test_a_recipient_that_asked_notify_delay_gets_one_delay_notice(self):
        import smtplib
        from test_delivery import message_body
        with smtplib.SMTP("127.0.0.1", self.port, timeout=30) as c:
            c.ehlo("client.example.test")
            c.mail("app@example.test")
            self.assertEqual(c.rcpt("slow@example.test", options=["NOTIFY=DELAY,FAILURE"])[0],
                             250)
            self.assertEqual(c.data(message_body("slow"))[0], 250)
        notices = wait_until(lambda: self.reports() or None, "the delay notice", 30)
        status = list(notices[0][1].iter_parts())[1].as_string()
        self.assertIn("Action: delayed", status)
        self.assertIn("Status: 4.2.1", status)
        self.assertIn("Will-Retry-Until:", status)
        self.assertEqual(notices[0][1]["Subject"], "Delayed Mail (still being retried)")
        # Retried again and again (retry_initial_s 1, retry_max_s 2): still one notice.
        wait_until(lambda: self.queue_entry_attempts() >= 4, "more attempts", 30)
        self.assertEqual(len(self.reports()), 1)

    def queue_entry_attempts(self):
        entries = self.queue("queue", "list")
        return max([e["attempts"] for e in entries if e["sender"]] or [0])


class NoReportTest(ReportFixture):
    def test_with_nobody_to_tell_there_is_only_the_dead_letter(self):
        queue_id = self.send(["gone@example.test"], "nobody")
        self.settle(30)
        wait_until(lambda: "event=report.none" in self.read_log(), "the report.none line", 20)
        self.assertEqual(self.reports(), [])
        self.assertEqual([d["id"] for d in self.queue("queue", "dead")], [queue_id])


if __name__ == "__main__":
    unittest.main()
