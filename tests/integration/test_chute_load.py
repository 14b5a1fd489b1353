"""chute-load against the real chuted: each scenario once, with small counts.

The assertions are about correctness, never speed: every message chute-load counts as
accepted is in the Maildir delivery put it in (found by its Message-ID), refusals are counted
by reply code, the caps are exact, and the exit status says what happened (0 completed, 1
usage, 2 the target failed).
"""

import json
import os
import re
import signal
import subprocess
import time

from chute_fixture import APP_PASSWORD, BIN, ChutedFixture, free_port
from jwt_mint import Keys

CHUTE_LOAD = os.path.join(BIN, "chute-load")

IP_CAP = 20
TENANT_CAP = 30
ISSUER = "https://login.example.test/contoso/v2.0"
AUDIENCE = "https://outlook.office365.com"
TENANT_ID = "11111111-2222-3333-4444-555555555555"


class ChuteLoadTest(ChutedFixture):
    with_tls = True
    extra_limits = (f"connections_per_ip = {IP_CAP}\n"
                    f"authenticated_connections_per_tenant = {TENANT_CAP}")

    def setUp(self):
        super().setUp()
        self.password_file = os.path.join(self.dir, "password")
        with open(self.password_file, "w") as f:
            f.write(APP_PASSWORD + "\n")

    def load(self, *args, expect_exit=0):
        result = subprocess.run([CHUTE_LOAD, "--json", *args], capture_output=True, text=True,
                                timeout=120)
        self.assertEqual(result.returncode, expect_exit,
                         f"chute-load {args}: {result.stdout}\n{result.stderr}")
        return json.loads(result.stdout)

    def auth_args(self, tls="starttls"):
        port = self.tls_port if tls == "starttls" else self.smtps_port
        return ["--target", f"127.0.0.1:{port}", "--tls", tls, "--user", "app@example.test",
                "--password-file", self.password_file]

    def delivered_ids(self, addresses):
        """Message-IDs of the messages in the Maildirs of `addresses`, once delivery settled."""
        self.settle()
        found = []
        for address in addresses:
            new = os.path.join(self.maildir(address), "new")
            for name in (os.listdir(new) if os.path.isdir(new) else []):
                with open(os.path.join(new, name), "rb") as f:
                    m = re.search(rb"^Message-ID: <([^>]+)>", f.read(), re.M | re.I)
                    found.append(m.group(1).decode() if m else None)
        return found

    def assert_all_delivered(self, report, recipients):
        self.assertEqual(report["errors"], {})
        ids = self.delivered_ids(recipients)
        # Every accepted message reached every one of its recipients, exactly once.
        self.assertEqual(len(ids), report["recipients"])
        self.assertNotIn(None, ids)
        self.assertEqual(len(set(ids)) * (report["recipients"] // report["messages"]), len(ids))

    def test_persistent_starttls_plain_pipelined_data(self):
        report = self.load(*self.auth_args(), "--connections", "4", "--messages", "40",
                           "--rcpts", "2", "--to", "user{n}@example.test", "--size", "5k")
        self.assertEqual(report["messages"], 40)
        self.assertEqual(report["recipients"], 80)
        self.assertEqual(report["auths"], report["tls_handshakes"])
        self.assertEqual(report["latency_us"]["end_of_data_to_250"]["count"], 40)
        self.assertGreater(report["latency_us"]["auth"]["count"], 0)
        self.assertTrue(report["completed"])
        self.assert_all_delivered(report, [f"user{n}@example.test" for n in range(80)])
        # The body came through DATA's dot-stuffing unchanged in size (about 5 KiB).
        with open(os.path.join(self.maildir("user0@example.test"), "new",
                               os.listdir(os.path.join(self.maildir("user0@example.test"),
                                                       "new"))[0]), "rb") as f:
            self.assertGreater(len(f.read()), 5 * 1024)

    def test_reconnect_implicit_tls_login_bdat_open_loop(self):
        report = self.load(*self.auth_args("implicit"), "--auth", "login", "--scenario",
                           "reconnect", "--connections", "3", "--messages", "12", "--rate", "40",
                           "--bdat", "--to", "printer@example.test")
        self.assertEqual(report["messages"], 12)
        # One connection, one handshake and one AUTH per message: a printer.
        self.assertEqual(report["connections_established"], 12)
        self.assertEqual(report["tls_handshakes"], 12)
        self.assertEqual(report["auths"], 12)
        self.assertEqual(report["latency_us"]["message"]["count"], 12)
        self.assert_all_delivered(report, ["printer@example.test"])
        # Closed loop: as fast as they go, still one connection per message and none spare.
        report = self.load(*self.auth_args(), "--scenario", "reconnect", "--connections", "3",
                           "--messages", "9", "--to", "printer2@example.test")
        self.assertEqual((report["messages"], report["connections_started"]), (9, 9))
        self.assert_all_delivered(report, ["printer2@example.test"])

    def test_burst_on_the_trusted_listener_with_a_size_distribution(self):
        report = self.load("--target", f"127.0.0.1:{self.port}", "--scenario", "burst",
                           "--connections", "12", "--size-dist", "1k:50,20k:50", "--to",
                           "burst{n}@corp.test", "--no-pipelining")
        self.assertEqual(report["messages"], 12)
        self.assertEqual(report["connections_established"], 12)
        self.assertEqual(report["tls_handshakes"], 0)
        self.assert_all_delivered(report, [f"burst{n}@corp.test" for n in range(12)])

    def test_xoauth2_with_a_token_file(self):
        keys = Keys(self.dir)
        self.ctl("tenant", "set", "example.test", "--oauth-issuer", ISSUER, "--oauth-audience",
                 AUDIENCE, "--oauth-tenant-id", TENANT_ID, "--oauth-jwks", keys.jwks_path)
        self.proc.send_signal(signal.SIGHUP)
        now = int(time.time())
        token = keys.token({"iss": ISSUER, "aud": AUDIENCE, "tid": TENANT_ID, "iat": now,
                            "nbf": now - 10, "exp": now + 3600, "roles": ["SMTP.SendAsApp"]})
        token_file = os.path.join(self.dir, "token")
        with open(token_file, "w") as f:
            f.write(token)
        args = ["--target", f"127.0.0.1:{self.tls_port}", "--tls", "starttls", "--user",
                "app@example.test", "--token-file", token_file, "--messages", "6",
                "--connections", "2", "--to", "oauth@example.test"]
        deadline = time.monotonic() + 10
        while True:  # until the reload has loaded the JWKS
            result = subprocess.run([CHUTE_LOAD, "--json", *args], capture_output=True, text=True,
                                    timeout=60)
            if result.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        report = json.loads(result.stdout)
        self.assertEqual(report["auth"], "xoauth2")
        self.assertEqual(report["messages"], 6)
        self.assert_all_delivered(report, ["oauth@example.test"])

    def test_idle_reports_server_memory_per_connection(self):
        report = self.load(*self.auth_args(), "--scenario", "idle", "--connections", "15",
                           "--server-pid", str(self.proc.pid), "--hold", "0.2")
        memory = report["memory"]
        self.assertEqual(memory["connections"], 15)
        self.assertEqual(report["auths"], 15)
        self.assertGreater(memory["rss_before_bytes"], 0)
        self.assertGreater(memory["rss_after_bytes"], 0)
        self.assertGreater(memory["pss_before_bytes"], 0)
        self.assertGreater(memory["pss_after_bytes"], 0)
        self.assertEqual(report["messages"], 0)
        self.assertEqual(report["errors"], {})

    def test_caps_are_exact_and_refusals_counted_by_code(self):
        report = self.load(*self.auth_args(), "--scenario", "caps", "--connections", "3",
                           "--ip-cap", str(IP_CAP), "--tenant-cap", str(TENANT_CAP))
        ip, tenant = report["caps"]["ip"], report["caps"]["tenant"]
        self.assertEqual((ip["attempted"], ip["accepted"], ip["refused"], ip["exact"]),
                         (IP_CAP + 3, IP_CAP, {"421 4.7.0": 3}, True))
        self.assertEqual((tenant["attempted"], tenant["accepted"], tenant["refused"],
                          tenant["exact"]), (TENANT_CAP + 3, TENANT_CAP, {"454 4.7.0": 3}, True))
        # A wrong expectation is a failed run (exit 2), not a quiet one.
        report = self.load(*self.auth_args(), "--scenario", "caps", "--connections", "2",
                           "--ip-cap", str(IP_CAP + 1), "--tenant-cap", str(TENANT_CAP),
                           expect_exit=2)
        self.assertFalse(report["caps"]["ip"]["exact"])

    def test_failures_are_counted_and_exit_2(self):
        wrong = os.path.join(self.dir, "wrong")
        with open(wrong, "w") as f:
            f.write("not the password")
        report = self.load("--target", f"127.0.0.1:{self.tls_port}", "--tls", "starttls",
                           "--user", "app@example.test", "--password-file", wrong,
                           "--messages", "3", "--connections", "1", "--max-errors", "2",
                           expect_exit=2)
        self.assertFalse(report["completed"])
        self.assertGreaterEqual(report["errors"].get("auth 535 5.7.3", 0), 1)
        self.assertEqual(report["messages"], 0)
        # A recipient outside the tenant: counted by phase and code.
        report = self.load("--target", f"127.0.0.1:{self.port}", "--messages", "2", "--to",
                           "someone@elsewhere.test", "--max-errors", "2", expect_exit=2)
        self.assertEqual(report["errors"], {"rcpt 550 5.7.54": 2})
        # Nobody listening.
        report = self.load("--target", f"127.0.0.1:{free_port()}", "--messages", "1",
                           "--max-errors", "1", expect_exit=2)
        self.assertEqual(report["errors"], {"connect ECONNREFUSED": 1})

    def test_usage(self):
        def run(*args):
            return subprocess.run([CHUTE_LOAD, *args], capture_output=True, text=True, timeout=30)
        help_text = run("--help")
        self.assertEqual(help_text.returncode, 0)
        for word in ("--target", "--scenario", "persistent", "reconnect", "burst", "idle", "caps",
                     "--token-file", "--size-dist", "--rate", "--json", "Exit status"):
            self.assertIn(word, help_text.stdout)
        self.assertEqual(run().returncode, 1)  # no --target
        remote = run("--target", "192.0.2.1:587")
        self.assertEqual(remote.returncode, 1)
        self.assertIn("--allow-remote", remote.stderr)
        self.assertEqual(run("--target", "127.0.0.1:25", "--size", "-3").returncode, 1)
        self.assertEqual(run("--target", "127.0.0.1:25", "--scenario", "nope").returncode, 1)
        self.assertEqual(run("--target", "127.0.0.1:25", "--user", "a@b.test").returncode, 1)
