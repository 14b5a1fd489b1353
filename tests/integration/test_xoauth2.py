"""XOAUTH2 against the real chuted: tokens minted here with the test's own keys."""

import base64
import json
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


def auth_token(port, token, user="app@example.test"):
    """The reply to AUTH XOAUTH2 with `token` for `user`, after STARTTLS on `port`."""
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as c:
        c.ehlo("client")
        c.starttls(context=client_context())
        c.ehlo("client")
        return c.docmd("AUTH", "XOAUTH2 " + xoauth2(user, token))


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
        return auth_token(self.tls_port, self.keys.token(claims, **token_options), user)

    def test_valid_rs256_and_es256_tokens(self):
        self.assertEqual(self.auth(self.claims()), (235, b"2.7.0 Authentication successful"))
        self.assertEqual(self.auth(self.claims(), alg="ES256")[0], 235)
        self.assertEqual(self.auth(self.claims(roles=None, oid=None, scp="Mail.Read SMTP.Send",
                                               upn="app@example.test"))[0], 235)
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

    def delegated(self, **changes):
        """A delegated token's claims: a user signed in to an app with the scope SMTP.Send."""
        return self.claims(**{"roles": None, "oid": "0b0b0b0b-0000-4000-8000-000000000000",
                              "scp": "SMTP.Send", "azp": APP_ID, **changes})

    def test_a_delegated_token_authenticates_only_the_account_its_user_claim_names(self):
        # The replay: a token for app@ with user=hve2@ got 235 and could send as hve2@.
        invalid = (535, b"5.7.3 Authentication unsuccessful")
        self.assertEqual(self.auth(self.delegated(upn="app@example.test"), user="hve2@example.test"),
                         invalid)
        self.assertEqual(self.auth(self.delegated(upn="app@example.test"))[0], 235)
        for name, claims, user in [
                ("upn in another case", self.delegated(upn="App@EXAMPLE.test"), "app@example.test"),
                ("preferred_username", self.delegated(preferred_username="app@example.test"),
                 "app@example.test"),
                ("unique_name", self.delegated(unique_name="app@example.test"), "app@example.test"),
                ("an alias of the account", self.delegated(upn="alias@example.test"),
                 "app@example.test"),
                ("user= spelled as the alias", self.delegated(upn="app@example.test"),
                 "alias@example.test")]:
            with self.subTest(name):
                self.assertEqual(self.auth(claims, user=user)[0], 235)
        for name, claims, user in [
                ("another account's upn", self.delegated(upn="hve2@example.test"),
                 "app@example.test"),
                ("no user claim", self.delegated(), "app@example.test"),
                ("a user claim that is not a string", self.delegated(upn=["app@example.test"]),
                 "app@example.test"),
                ("the same local part in another accepted domain",
                 self.delegated(upn="app@corp.test"), "app@example.test"),
                ("upn wins over preferred_username",
                 self.delegated(upn="hve2@example.test", preferred_username="app@example.test"),
                 "app@example.test"),
                ("a scope without SMTP.Send", self.delegated(upn="app@example.test",
                                                             scp="Mail.Read"), None)]:
            with self.subTest(name):
                reply = self.auth(claims, user=user or "app@example.test")
                if user is None:
                    self.assertEqual(reply[0], 535)
                    self.assertIn(b"5.7.144", reply[1])
                else:
                    self.assertEqual(reply, invalid)
        with open(self.log_path) as log:
            self.assertIn("the token's upn is hve2@example.test", log.read())

    def test_an_app_only_token_needs_the_account_to_let_its_app_in(self):
        not_allowed = (550, b"5.7.240 The application is not allowed for use with this High "
                            b"Volume Email account")
        # An empty AllowedApps lets any app of the tenant in (HVE's rule), until the tenant
        # says listed.
        self.assertEqual(self.auth(self.claims(), user="hve2@example.test")[0], 235)
        self.ctl("tenant", "set", "example.test", "--oauth-app-access", "listed")
        self.assertIn("OAuth app access:    listed",
                      self.ctl("tenant", "show", "example.test").stdout)
        self.wait_for_reply(self.claims(), not_allowed, user="hve2@example.test")
        self.assertEqual(self.auth(self.claims(oid=None), user="hve2@example.test"), not_allowed)
        # A delegated token names its app only by client id, never by the object id
        # AllowedApps holds: with a list in force, it is refused too.
        self.assertEqual(self.auth(self.delegated(upn="hve2@example.test"),
                                   user="hve2@example.test"), not_allowed)
        self.ctl("app-access", "add", "hve2@example.test", "--app-id", APP_ID.upper())
        self.wait_for_reply(self.claims(), 235, user="hve2@example.test")
        # The app is let into hve2, not into app@, whose list is still empty.
        self.assertEqual(self.auth(self.claims()), not_allowed)
        self.ctl("tenant", "set", "example.test", "--oauth-app-access", "any")
        self.wait_for_reply(self.claims(), 235)
        result = self.ctl("tenant", "set", "example.test", "--oauth-app-access", "some",
                          check=False)
        self.assertEqual(result.returncode, 1, result)  # a usage error
        self.assertIn("--oauth-app-access is any or listed", result.stderr)

    def wait_for_reply(self, claims, expected, user="app@example.test"):
        """Until the directory change has reached chuted (it re-reads it within a second)."""
        deadline = time.monotonic() + 10
        while True:
            reply = self.auth(claims, user=user)
            if reply == expected or reply[0] == expected:
                return
            self.assertLess(time.monotonic(), deadline, f"still {reply}, not {expected}")
            time.sleep(0.2)

    def test_jwt_hygiene(self):
        invalid = (535, b"5.7.3 Authentication unsuccessful")
        good = self.claims()
        body = json.dumps(good)

        def padded(data):
            return base64.urlsafe_b64encode(data).decode()

        cases = {
            "nbf = 1e30": ({"claims": self.claims(nbf=1e30)}, invalid),
            "exp = 1e30": ({"claims": self.claims(exp=1e30)}, invalid),
            "exp as a string": ({"claims": self.claims(exp=str(int(time.time()) + 3600))},
                                invalid),
            "iat an hour ahead": ({"claims": self.claims(iat=int(time.time()) + 3600)}, invalid),
            "an unknown crit": ({"claims": good, "header": {"alg": "RS256", "kid": "rsa1",
                                                             "crit": ["exp"], "exp": 1}}, invalid),
            # The good value last: a parser that keeps the last of two names would accept it.
            "a repeated claim": ({"claims": good, "claims_text":
                                  '{"aud": "https://elsewhere.test", ' + body[1:]}, invalid),
            "a repeated header member": ({"claims": good, "header_text":
                                          '{"alg": "none", "kid": "rsa1", "alg": "RS256"}'},
                                         invalid),
            # A 31-byte header: its base64url is padded with "==".
            "padded base64url": ({"claims": good, "encode": padded,
                                  "header_text": '{"alg": "RS256", "kid": "rsa1"}'}, invalid),
            "a high-S ES256 signature": ({"claims": good, "alg": "ES256", "high_s": True},
                                         invalid),
        }
        for name, (options, expected) in cases.items():
            with self.subTest(name):
                claims = options.pop("claims")
                self.assertEqual(self.auth(claims, **options), expected)
        # White space inside a part is not base64url either.
        token = self.keys.token(good)
        head, rest = token.split(".", 1)
        self.assertEqual(auth_token(self.tls_port, head[:4] + " " + head[4:] + "." + rest),
                         invalid)
        # The same tokens without the defect are fine: the refusals above are the defects'.
        self.assertEqual(self.auth(self.claims(nbf=int(time.time()) - 10.5))[0], 235)
        self.assertEqual(self.auth(good, alg="ES256")[0], 235)
        self.assertEqual(auth_token(self.tls_port, token)[0], 235)

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
