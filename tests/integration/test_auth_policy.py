"""Authentication policy per account, disabled accounts, and the failed-AUTH throttle against
the real chuted (issue 16, section 3): each test replays what was measured."""

import base64
import json
import re
import smtplib
import socket
import time
import unittest

from chute_fixture import APP_PASSWORD, ChutedFixture
from test_tls_auth import client_context
import test_xoauth2  # its class is not imported by name: unittest would run its tests here

WRONG = (535, b"5.7.3 Authentication unsuccessful")
BASIC_OFF = (535, b"5.7.139 Authentication unsuccessful, basic authentication is disabled")


def plain(user, password):
    return "PLAIN " + base64.b64encode(f"\0{user}\0{password}".encode()).decode()


class Client:
    """One AUTH PLAIN over STARTTLS from `source`: (code, text, seconds)."""

    def __init__(self, fixture, source="127.0.0.1"):
        self.fixture, self.source = fixture, source

    def auth(self, user, password):
        with smtplib.SMTP("127.0.0.1", self.fixture.tls_port, timeout=30,
                          source_address=(self.source, 0)) as c:
            c.ehlo("client.example.test")
            c.starttls(context=client_context())
            c.ehlo("client.example.test")
            started = time.monotonic()
            code, text = c.docmd("AUTH", plain(user, password))
            return code, text, time.monotonic() - started


def wait_for(check, what, deadline_s=10):
    """Polls `check` until it is true: the directory is re-read by chuted when it changes
    (no SIGHUP, no restart)."""
    deadline = time.monotonic() + deadline_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(what)
        time.sleep(0.2)


class AccountPolicyTest(ChutedFixture):
    with_tls = True

    def auth(self, user="app@example.test", password=APP_PASSWORD):
        return Client(self).auth(user, password)[:2]

    def show(self, account="app@example.test"):
        return json.loads(self.ctl("--json", "account", "show", account).stdout)

    def test_a_disabled_account_authenticates_by_no_password_and_no_trusted_listener(self):
        # Was: there was no way to disable an account but to remove it.
        self.assertEqual(self.auth()[0], 235)
        self.ctl("account", "disable", "app@example.test")
        self.assertFalse(self.show()["enabled"])
        self.assertIn("Enabled:            false",
                      self.ctl("account", "show", "app@example.test").stdout)
        # The same reply as a wrong password: it tells nobody the account exists.
        wait_for(lambda: self.auth() == WRONG, "the disable did not take effect")
        self.assertEqual(self.auth(password="wrong"), WRONG)
        # The trusted listener acts as app@example.test: it acts as no one now.
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as s:
            self.assertEqual(s.recv(512),
                             b"421 4.7.1 This listener's account is disabled, try again later\r\n")
        log = self.read_log()
        self.assertRegex(log, r'event=auth.failed .*user=app@example.test .*reason="account '
                              r'disabled"')
        self.ctl("account", "enable", "app@example.test")
        wait_for(lambda: self.auth()[0] == 235, "the enable did not take effect")
        with smtplib.SMTP("127.0.0.1", self.port, timeout=10) as c:
            c.sendmail("app@example.test", ["a@example.test"], b"Subject: x\r\n\r\nx\r\n")

    def test_the_cmdlet_spelling_disables_too(self):
        self.ctl("Set-MailUser", "-HVEAccount", "-Identity", "app@example.test",
                 "-AccountDisabled:$true")
        self.assertFalse(self.show()["enabled"])
        self.ctl("Set-MailUser", "-HVEAccount", "-Identity", "app@example.test",
                 "-AccountDisabled:$false")
        self.assertTrue(self.show()["enabled"])

    def test_the_accounts_policy_overrides_its_tenants_both_ways(self):
        self.assertEqual(self.show()["basic_auth"], "tenant")
        self.ctl("account", "set", "app@example.test", "--basic-auth", "off")
        self.assertEqual(self.show()["basic_auth"], "off")
        # The policy is told only to a client that gave the right password.
        wait_for(lambda: self.auth() == BASIC_OFF, "the account's policy was not applied")
        self.assertEqual(self.auth(password="wrong"), WRONG)
        # The tenant says off, the account says on: the account wins.
        self.ctl("tenant", "set", "example.test", "--basic-auth", "off")
        self.ctl("Set-User", "-Identity", "app@example.test",
                 "-AuthenticationPolicy", "AllowBasicAuthSmtp")
        self.assertEqual(self.show()["basic_auth"], "on")
        wait_for(lambda: self.auth()[0] == 235, "the account's policy did not override")
        self.ctl("Set-User", "-Identity", "app@example.test", "-AuthenticationPolicy", "$null")
        self.assertEqual(self.show()["basic_auth"], "tenant")
        wait_for(lambda: self.auth() == BASIC_OFF, "the tenant's switch did not apply again")
        refused = self.ctl("Set-User", "-Identity", "app@example.test", "-AuthenticationPolicy",
                           "Custom", check=False)
        self.assertNotEqual(refused.returncode, 0)
        self.assertIn("BlockBasicAuthSmtp", refused.stderr)


class DisabledXoauth2Test(ChutedFixture):
    with_tls = True
    claims = test_xoauth2.Xoauth2Test.claims
    auth = test_xoauth2.Xoauth2Test.auth

    def setUp(self):
        super().setUp()
        test_xoauth2.Xoauth2Test.configure(self)

    def test_a_disabled_account_gets_no_token_in(self):
        # Was: nothing could stop a valid token for an account short of removing it.
        self.ctl("account", "disable", "app@example.test")
        wait_for(lambda: self.auth(self.claims()) == WRONG, "XOAUTH2 still let it in")
        self.ctl("account", "enable", "app@example.test")
        wait_for(lambda: self.auth(self.claims())[0] == 235, "XOAUTH2 stayed closed")


class ThrottleTest(ChutedFixture):
    with_tls = True
    auth_throttle = True
    extra_limits = ("auth_failures_per_ip = 3\nauth_failed_users_per_ip = 3\n"
                    "auth_failure_delay_max_s = 1\nauth_failure_window_s = 600\n"
                    'auth_throttle_exempt = ["127.0.0.9/32"]')

    def test_a_neighbours_failures_lock_no_other_account_out(self):
        # Was: after the failures of one app behind an address, every account behind it got
        # 550 5.2.251 for the window, even with the right password; the log said user="".
        nat = Client(self, "127.0.0.2")
        self.assertEqual(nat.auth("app@example.test", APP_PASSWORD)[0], 235)
        for _ in range(4):
            nat.auth("hve2@example.test", "misconfigured")
        code, text, _ = nat.auth("hve2@example.test", "misconfigured")
        self.assertEqual((code, text[:7]), (550, b"5.2.251"))  # the guessed name is stopped
        ok = nat.auth("app@example.test", APP_PASSWORD)
        self.assertEqual(ok[0], 235)
        self.assertLess(ok[2], 1.0)  # and not slowed
        self.assertRegex(self.read_log(), r'event=auth.failed .*user=hve2@example.test .*'
                                          r'code=550 .*reason="guessing')

    def test_a_sprayer_is_refused_new_names_but_known_good_ones_get_in(self):
        spray = Client(self, "127.0.0.3")
        self.assertEqual(spray.auth("app@example.test", APP_PASSWORD)[0], 235)
        for n in range(3):
            self.assertEqual(spray.auth(f"user{n}@example.test", "Winter2024!")[:2], WRONG)
        code, text, took = spray.auth("user9@example.test", "Winter2024!")
        self.assertEqual((code, text[:7]), (550, b"5.2.251"))
        self.assertLess(took, 0.5)  # at once: no argon2 for a sprayer
        self.assertEqual(spray.auth("app@example.test", APP_PASSWORD)[0], 235)
        self.assertRegex(self.read_log(), r'user=user9@example.test .*reason="spraying')
        self.assertGreaterEqual(self.metrics()['chute_auth_throttled_total{reason="spray"}'], 1)

    def test_an_exempt_network_is_not_throttled(self):
        exempt = Client(self, "127.0.0.9")
        for _ in range(5):
            code, _, took = exempt.auth("app@example.test", "wrong")
            self.assertEqual(code, 535)
            self.assertLess(took, 0.9)  # never delayed
        self.assertEqual(exempt.auth("app@example.test", APP_PASSWORD)[0], 235)


class EnumerationTest(ChutedFixture):
    with_tls = True
    auth_throttle = True
    extra_limits = "auth_failure_delay_max_s = 1\nauth_failure_window_s = 600"

    def test_basic_auth_off_tells_nobody_which_accounts_exist(self):
        # Was: on a tenant with basic auth off, an existing account got 535 5.7.139 at once
        # (never counted) and an unknown one 535 5.7.3 after the throttle's delay.
        self.ctl("tenant", "set", "example.test", "--basic-auth", "off")
        probe = Client(self, "127.0.0.4")
        wait_for(lambda: probe.auth("app@example.test", APP_PASSWORD)[:2] == BASIC_OFF,
                 "basic auth stayed on")
        failures = self.auth_failures()
        replies = {}
        for n, user in enumerate(("app@example.test", "nobody@example.test",
                                  "hve2@example.test", "ghost@example.test")):
            # Each from a fresh address, so each is its address's first failure.
            code, text, took = Client(self, f"127.0.1.{n + 1}").auth(user, "guess")
            replies[user] = (code, text)
            self.assertGreaterEqual(took, 0.9, user)  # the same delay for each
        self.assertEqual(set(replies.values()), {WRONG}, replies)
        # Every one counted as a failure (the 5.7.139 answers were not).
        self.assertEqual(self.auth_failures(), failures + 4)

    def auth_failures(self):
        return sum(v for k, v in self.metrics().items()
                   if k.startswith("chute_auth_failures_total"))


if __name__ == "__main__":
    unittest.main()
