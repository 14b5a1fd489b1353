"""XOAUTH2 against the real chuted: tokens minted here with the test's own keys."""

import os
import signal
import smtplib
import subprocess
import time
import unittest

from chute_fixture import ChutedFixture
from jwt_mint import Keys, xoauth2
from test_tls_auth import client_context

ISSUER = "https://login.example.test/contoso/v2.0"
AUDIENCE = "https://outlook.office365.com"
TENANT_ID = "11111111-2222-3333-4444-555555555555"
APP_ID = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"


class Xoauth2Test(ChutedFixture):
    with_tls = True

    def setUp(self):
        super().setUp()
        self.configure()

    def configure(self):
        """The tenant's OAuth settings, loaded (also used by test_auth_policy)."""
        self.keys = Keys(self.dir)
        self.ctl("tenant", "set", "example.test", "--oauth-issuer", ISSUER, "--oauth-audience",
                 AUDIENCE, "--oauth-tenant-id", TENANT_ID, "--oauth-jwks", self.keys.jwks_path)
        self.proc.send_signal(signal.SIGHUP)
        # Wait until a valid token works, i.e. the reload happened.
        deadline = time.monotonic() + 10
        while self.auth(self.claims())[0] != 235:
            self.assertLess(time.monotonic(), deadline, "the OAuth settings were not loaded")
            time.sleep(0.2)

    def claims(self, **changes):
        now = int(time.time())
        claims = {"iss": ISSUER, "aud": AUDIENCE, "tid": TENANT_ID, "iat": now, "nbf": now - 10,
                  "exp": now + 3600, "roles": ["SMTP.SendAsApp"], "oid": APP_ID}
        claims.update(changes)
        return {k: v for k, v in claims.items() if v is not None}

    def auth(self, claims, user="app@example.test", **token_options):
        token = self.keys.token(claims, **token_options)
        with smtplib.SMTP("127.0.0.1", self.tls_port, timeout=30) as c:
            c.ehlo("client")
            c.starttls(context=client_context())
            c.ehlo("client")
            return c.docmd("AUTH", "XOAUTH2 " + xoauth2(user, token))

    def test_valid_rs256_and_es256_tokens(self):
        self.assertEqual(self.auth(self.claims()), (235, b"2.7.0 Authentication successful"))
        self.assertEqual(self.auth(self.claims(), alg="ES256")[0], 235)
        self.assertEqual(self.auth(self.claims(roles=None, scp="Mail.Read SMTP.Send"))[0], 235)
        self.assertEqual(self.auth(self.claims(aud=[AUDIENCE, "other"]))[0], 235)

    def test_refusals(self):
        now = int(time.time())
        invalid = (535, b"5.7.3 Authentication unsuccessful")
        cases = {
            "expired": (self.claims(exp=now - 3600), {}, (535, b"5.7.143 Expired token")),
            "not yet valid": (self.claims(nbf=now + 3600), {}, invalid),
            "wrong aud": (self.claims(aud="https://elsewhere.test"), {}, invalid),
            "wrong iss": (self.claims(iss="https://evil.test"), {}, invalid),
            "wrong tid": (self.claims(tid="99999999-2222-3333-4444-555555555555"), {}, invalid),
            "no role": (self.claims(roles=["Mail.Read"]), {},
                        (535, b"5.7.144 XOAUTH2 authentication failed. Invalid API permissions")),
            "bad signature": (self.claims(), {"tamper": True}, invalid),
            "alg none": (self.claims(), {"alg": "none",
                                         "header": {"alg": "none", "typ": "JWT"}}, invalid),
            "HS256 with the public key": (self.claims(), {"alg": "HS256",
                                                          "header": {"alg": "HS256"}}, invalid),
            "RS256 header on the EC key": (self.claims(), {"alg": "ES256",
                                                           "header": {"alg": "RS256", "kid": "ec1"}},
                                           invalid),
        }
        for name, (claims, options, expected) in cases.items():
            with self.subTest(name):
                self.assertEqual(self.auth(claims, **options), expected)

    def test_unknown_user_and_garbage(self):
        self.assertEqual(self.auth(self.claims(), user="nobody@example.test")[0], 535)
        with smtplib.SMTP("127.0.0.1", self.tls_port, timeout=30) as c:
            c.ehlo("client")
            c.starttls(context=client_context())
            c.ehlo("client")
            self.assertEqual(c.docmd("AUTH", "XOAUTH2 " + xoauth2("app@example.test", "a.b.c")),
                             (535, b"5.7.3 Authentication unsuccessful"))
            self.assertEqual(c.docmd("AUTH", "XOAUTH2 not-base64!"),
                             (501, b"5.5.124 Invalid XOAUTH2 auth data"))
            # Over the SASL field bound (8 KiB decoded): malformed, before any token parsing.
            oversized = xoauth2("app@example.test", "x" * 9000)
            self.assertEqual(c.docmd("AUTH", "XOAUTH2 " + oversized),
                             (501, b"5.5.124 Invalid XOAUTH2 auth data"))

    def test_allowed_apps(self):
        self.ctl("app-access", "add", "app@example.test", "--app-id",
                 "12345678-0000-4000-8000-000000000000")
        self.proc.send_signal(signal.SIGHUP)
        expected = (550, b"5.7.240 The application is not allowed for use with this High "
                         b"Volume Email account")
        deadline = time.monotonic() + 10
        while self.auth(self.claims()) != expected:
            self.assertLess(time.monotonic(), deadline)
            time.sleep(0.2)
        self.assertEqual(self.auth(self.claims(oid="12345678-0000-4000-8000-000000000000"))[0],
                         235)
        # The client id (azp/appid) is not the service principal's object id: it never matches.
        self.assertEqual(self.auth(self.claims(oid=None, azp="12345678-0000-4000-8000-000000000000")),
                         expected)
        self.assertEqual(self.auth(self.claims(oid=None,
                                               appid="12345678-0000-4000-8000-000000000000")),
                         expected)

    def test_python_smtplib_auth_xoauth2_and_curl_bearer(self):
        token = self.keys.token(self.claims())
        with smtplib.SMTP("127.0.0.1", self.tls_port, timeout=30) as c:
            c.ehlo("client")
            c.starttls(context=client_context())
            c.ehlo("client")
            code, _ = c.auth("XOAUTH2", lambda challenge=None:
                             f"user=app@example.test\x01auth=Bearer {token}\x01\x01")
            self.assertEqual(code, 235)
            c.sendmail("app@example.test", ["oauth@example.test"], b"Subject: o\r\n\r\nhi\r\n")
        path = os.path.join(self.dir, "m.txt")
        with open(path, "wb") as f:
            f.write(b"Subject: curl oauth\r\n\r\nhi\r\n")
        out = subprocess.run(
            ["curl", "-sS", "--ssl-reqd", "-k", "--sasl-ir", f"smtp://127.0.0.1:{self.tls_port}",
             "--login-options", "AUTH=XOAUTH2", "--user", "app@example.test:",
             "--oauth2-bearer", token, "--mail-from", "app@example.test", "--mail-rcpt",
             "oauth@example.test", "--upload-file", path], capture_output=True, text=True,
            timeout=60)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(len(self.messages("oauth@example.test")), 2)


if __name__ == "__main__":
    unittest.main()
