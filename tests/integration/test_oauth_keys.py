"""OAuth key rotation against the real chuted: a local identity provider over HTTPS, with a
certificate from a CA the test makes, serves OpenID metadata and a JWKS that the test rotates,
takes down and brings back; chuted must follow it without SIGHUP and never trust keys from a
server it cannot verify."""

import copy
import http.server
import json
import os
import signal
import ssl
import subprocess
import threading
import time
import unittest

from chute_fixture import CHUTED, ChutedFixture, wait_for_port
from jwt_mint import Keys
from test_delivery_tls import make_ca, make_server_certificate
from test_xoauth2 import AUDIENCE, TENANT_ID, auth_token

OK = 235


class IdentityProvider:
    """An HTTPS server on 127.0.0.1 that answers, for the tenant path /contoso:
    /contoso/v2.0/.well-known/openid-configuration with its metadata, /contoso/keys with
    `self.jwks`. `self.down` makes every answer a 503. `gets` counts requests per path."""

    def __init__(self, certificate, key, host="127.0.0.1"):
        self.jwks = {"keys": []}
        self.down = False
        self.gets = {}
        self.lock = threading.Lock()
        provider = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                with provider.lock:
                    provider.gets[self.path] = provider.gets.get(self.path, 0) + 1
                    down = provider.down
                    jwks = copy.deepcopy(provider.jwks)
                if down:
                    body, status = b"maintenance", 503
                elif self.path == "/contoso/v2.0/.well-known/openid-configuration":
                    body, status = json.dumps({
                        "issuer": provider.issuer, "jwks_uri": provider.base + "/contoso/keys",
                        "token_endpoint": provider.base + "/contoso/oauth2/v2.0/token"}).encode(), 200
                elif self.path == "/contoso/keys":
                    body, status = json.dumps(jwks).encode(), 200
                else:
                    body, status = b"not found", 404
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(certificate, key)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        # `host` names it in URLs: "localhost" resolves to ::1 (not listened on: the fetcher
        # must fall back) and 127.0.0.1, and the certificate is checked for the DNS name.
        self.base = f"https://{host}:{self.port}"
        self.issuer = self.base + "/contoso/v2.0"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def serve(self, *key_sets):
        with self.lock:
            self.jwks = {"keys": [k for keys in key_sets for k in keys.jwks["keys"]]}

    def count(self, path):
        with self.lock:
            return self.gets.get(path, 0)

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


def rekeyed(directory, suffix):
    """Keys whose kids end in `suffix` (rsa2, ec2): another generation of signing keys."""
    os.makedirs(directory)
    keys = Keys(directory)
    for key in keys.jwks["keys"]:
        key["kid"] = key["kid"][:-1] + suffix
    return keys


class OAuthKeysFixture(ChutedFixture):
    with_tls = True
    fetch_interval_min_s = 1
    self_signed_idp = False
    idp_host = "localhost"
    idp_san = "DNS:localhost,IP:127.0.0.1"

    def setUp(self):
        import tempfile
        self.idp_dir = tempfile.mkdtemp(prefix="chute-idp-")
        ca = make_ca(self.idp_dir)
        self.ca_file = ca[0]
        signer = None if self.self_signed_idp else ca
        certificate, key = make_server_certificate(self.idp_dir, "idp", self.idp_san, signer)
        self.idp = IdentityProvider(certificate, key, self.idp_host)
        self.addCleanup(self.idp.stop)
        self.keys1 = rekeyed(os.path.join(self.idp_dir, "gen1"), "1")
        self.keys2 = rekeyed(os.path.join(self.idp_dir, "gen2"), "2")
        self.idp.serve(self.keys1)
        self.extra_config = f"""
[oauth]
ca_file = "{self.ca_file}"
refresh_s = 3600
fetch_interval_min_s = {self.fetch_interval_min_s}
fetch_timeout_s = 30
"""
        super().setUp()

    def claims(self):
        now = int(time.time())
        return {"iss": self.idp.issuer, "aud": AUDIENCE, "tid": TENANT_ID, "iat": now,
                "nbf": now - 10, "exp": now + 3600, "roles": ["SMTP.SendAsApp"],
                "oid": "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"}

    def auth(self, keys, generation, alg="RS256"):
        kid = ("ec" if alg == "ES256" else "rsa") + generation
        return auth_token(self.tls_port, keys.token(self.claims(), alg=alg, kid=kid))[0]

    def trust(self, jwks):
        """The tenant trusts the local provider's issuer, with its keys from `jwks`."""
        self.ctl("tenant", "set", "example.test", "--oauth-issuer", self.idp.issuer,
                 "--oauth-audience", AUDIENCE, "--oauth-tenant-id", TENANT_ID, "--oauth-jwks",
                 jwks)

    def wait_for(self, what, predicate, deadline_s=20):
        end = time.monotonic() + deadline_s
        while not predicate():
            if time.monotonic() > end:
                self.fail(f"{what} within {deadline_s} s; log:\n{self.read_log()[-4000:]}")
            time.sleep(0.2)

    def restart(self):
        self.proc.send_signal(signal.SIGTERM)
        self.assertEqual(self.proc.wait(timeout=40), 0)
        self.proc = subprocess.Popen([CHUTED, "--config", self.config], stdout=self.log,
                                     stderr=subprocess.STDOUT)
        wait_for_port("127.0.0.1", self.port)


class KeyRotationTest(OAuthKeysFixture):
    def test_discovery_follows_a_rotation_without_sighup(self):
        self.trust("discovery")
        shown = self.ctl("tenant", "show", "example.test").stdout
        self.assertIn(f"OAuth JWKS:          discovery ({self.idp.issuer}"
                      "/.well-known/openid-configuration)", shown)
        # No SIGHUP: the directory change is noticed, the keys fetched by chuted itself.
        self.wait_for("a token signed by the first keys verifies",
                      lambda: self.auth(self.keys1, "1") == OK)
        self.assertEqual(self.auth(self.keys1, "1", alg="ES256"), OK)
        self.assertGreaterEqual(self.idp.count("/contoso/v2.0/.well-known/openid-configuration"), 1)

        # The provider rotates without warning: tokens are signed with the new keys at once.
        self.idp.serve(self.keys2)
        # The first such token is refused (no session waits for a fetch) and starts the fetch.
        self.assertEqual(self.auth(self.keys2, "2"), 535)
        self.wait_for("a token signed by the new keys verifies",
                      lambda: self.auth(self.keys2, "2") == OK)
        log = self.read_log()
        self.assertIn("no key with kid rsa2 (the tenant's keys will be fetched again)", log)
        self.assertIn("OAuth key(s) fetched from", log)
        # The retired keys no longer verify anything.
        self.assertEqual(self.auth(self.keys1, "1"), 535)
        metrics = self.metrics()
        self.assertGreaterEqual(metrics['chute_oauth_key_fetches_total{result="ok"}'], 2)
        self.assertEqual(metrics['chute_oauth_tenants{keys="loaded"}'], 1)

    def test_an_unreachable_provider_keeps_the_keys_and_a_restart_uses_the_cache(self):
        self.trust(self.idp.base + "/contoso/keys")
        self.wait_for("the first keys verify", lambda: self.auth(self.keys1, "1") == OK)
        cache = os.path.join(self.dir, "oauth-keys")
        self.assertEqual(os.stat(cache).st_mode & 0o777, 0o700)
        (name,) = os.listdir(cache)
        self.assertEqual(os.stat(os.path.join(cache, name)).st_mode & 0o777, 0o600)

        self.idp.down = True
        # An unknown kid makes chuted try again; the 503 changes nothing it trusts.
        self.assertEqual(self.auth(self.keys2, "2"), 535)
        self.wait_for("the failed fetch is logged",
                      lambda: "OAuth keys not fetched" in self.read_log())
        self.assertIn("HTTP 503", self.read_log())
        self.assertEqual(self.auth(self.keys1, "1"), OK)
        self.assertGreaterEqual(self.metrics()['chute_oauth_key_fetches_total{result="failed"}'], 1)

        # Restarted while the provider is still down: the cached keys verify.
        self.restart()
        self.assertEqual(self.auth(self.keys1, "1"), OK)
        self.assertIn("OAuth key(s) from the cache", self.read_log())

        # Back up, rotated: followed again.
        self.idp.serve(self.keys2)
        self.idp.down = False
        self.wait_for("the new keys verify after the provider is back",
                      lambda: self.auth(self.keys2, "2") == OK)

    def test_a_jwks_file_that_changes_is_read_again_without_sighup(self):
        path = os.path.join(self.dir, "tenant-jwks.json")

        def write(keys):
            with open(path + ".new", "w") as f:
                json.dump(keys.jwks, f)
            os.rename(path + ".new", path)

        write(self.keys1)
        self.trust(path)
        self.wait_for("the file's keys verify", lambda: self.auth(self.keys1, "1") == OK)
        write(self.keys2)
        self.wait_for("the rewritten file's keys verify",
                      lambda: self.auth(self.keys2, "2") == OK)
        self.assertIn("changed: 2 OAuth key(s): rsa2, ec2", self.read_log())
        with open(path, "w") as f:
            f.write("{ half a file")
        self.wait_for("the broken file is reported",
                      lambda: "the JWKS file changed and does not load" in self.read_log())
        self.assertEqual(self.auth(self.keys2, "2"), OK)  # the keys in force stay

    def test_chutectl_says_which_sources_there_are(self):
        out = self.ctl("tenant", "set", "example.test", "--oauth-jwks", "discovery", check=False)
        self.assertNotEqual(out.returncode, 0)
        self.assertIn("needs the tenant's issuer", out.stderr)
        out = self.ctl("tenant", "set", "example.test", "--oauth-jwks",
                       "http://127.0.0.1/keys", check=False)
        self.assertNotEqual(out.returncode, 0)
        self.assertIn("not a JWKS source", out.stderr)
        out = self.ctl("tenant", "set", "example.test", "--oauth-jwks",
                       "https://user:pw@idp.example.test/keys", check=False)
        self.assertNotEqual(out.returncode, 0)
        self.assertIn("user information", out.stderr)
        self.trust(self.idp.base + "/contoso/keys")
        shown = json.loads(self.ctl("--json", "tenant", "show", "example.test").stdout)
        self.assertEqual(shown["oauth_jwks"], self.idp.base + "/contoso/keys")
        self.assertEqual(shown["oauth_jwks_file"], "")


class UnknownKidBoundTest(OAuthKeysFixture):
    """With fetch_interval_min_s = 1 hour, a flood of tokens naming made-up key ids makes
    chuted fetch nothing more: the provider is not hammered on an attacker's behalf."""
    fetch_interval_min_s = 3600

    def test_made_up_kids_do_not_make_chuted_hammer_the_provider(self):
        self.trust(self.idp.base + "/contoso/keys")
        self.wait_for("the first keys verify", lambda: self.auth(self.keys1, "1") == OK)
        fetched = self.idp.count("/contoso/keys")
        self.assertEqual(fetched, 1)
        for i in range(20):
            token = self.keys1.token(self.claims(), kid=f"made-up-{i}")
            self.assertEqual(auth_token(self.tls_port, token)[0], 535)
        time.sleep(1.5)  # what the fetcher would have done by now, it would have done
        self.assertEqual(self.idp.count("/contoso/keys"), fetched)


class UntrustedProviderTest(OAuthKeysFixture):
    """A provider whose certificate is not from the configured CA (a man in the middle, or a
    misconfiguration) is never believed."""
    self_signed_idp = True
    refusal = "certificate verify failed"

    def test_keys_from_a_server_that_does_not_verify_are_not_used(self):
        self.trust("discovery")
        self.wait_for("the refused certificate is logged",
                      lambda: "OAuth keys not fetched" in self.read_log())
        self.assertIn(self.refusal, self.read_log())
        self.assertEqual(self.auth(self.keys1, "1"), 535)
        self.assertEqual(self.idp.count("/contoso/v2.0/.well-known/openid-configuration"), 0)
        self.assertEqual(self.metrics()['chute_oauth_tenants{keys="none"}'], 1)


class WrongNameProviderTest(UntrustedProviderTest):
    """A certificate from the right CA for another name (another of the CA's servers, in the
    middle) is refused as well."""
    self_signed_idp = False
    idp_san = "DNS:idp.elsewhere.test"
    refusal = "name mismatch"


if __name__ == "__main__":
    unittest.main()
