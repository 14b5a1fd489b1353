"""tools/run.sh as the README runs it: a copy on ports and in a state directory of its own
(CHUTE_SUBMISSION_PORT, CHUTE_TRUSTED_PORT, CHUTE_ADMIN_PORT, CHUTE_VAR_DIR), a message over
STARTTLS + AUTH PLAIN into its Maildir, stopped by its pid (chuted replaces the script); a
second run keeps the ports of the chute.toml it finds except those the environment gives.

run.sh builds in the repository's build/ (nothing to do when chuted and chutectl are up to
date); the test is skipped when build/ was never configured, so that it never starts a whole
build."""

import os
import shutil
import signal
import smtplib
import ssl
import subprocess
import tempfile
import time
import unittest
import urllib.request

from chute_fixture import free_port, wait_for_port

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
RUN_SH = os.path.join(ROOT, "tools", "run.sh")
START_DEADLINE_S = 300  # a build of what is out of date, then chuted's start


class RunShTest(unittest.TestCase):
    def setUp(self):
        if not os.path.exists(os.path.join(ROOT, "build", "build.ninja")):
            self.skipTest("build/ is not configured (run.sh would build everything)")
        self.var = tempfile.mkdtemp(prefix="chute-run-sh-")
        self.addCleanup(shutil.rmtree, self.var, True)

    def start(self, **ports):
        log_path = os.path.join(self.var, f"run-{len(os.listdir(self.var))}.log")
        log = open(log_path, "w")
        self.addCleanup(log.close)
        env = {**os.environ, "CHUTE_VAR_DIR": self.var, **{k: str(v) for k, v in ports.items()}}
        proc = subprocess.Popen([RUN_SH], stdout=log, stderr=subprocess.STDOUT, env=env,
                                stdin=subprocess.DEVNULL)
        self.addCleanup(self.stop, proc)
        return proc, log_path

    def stop(self, proc):
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # the script's pid is chuted's (exec)
            try:
                proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return proc.returncode

    def admin_ok(self, port):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as r:
            return r.status == 200

    def test_help_names_the_environment(self):
        out = subprocess.run([RUN_SH, "--help"], capture_output=True, text=True, timeout=30)
        self.assertEqual(out.returncode, 0, out.stderr)
        for name in ("CHUTE_SUBMISSION_PORT", "CHUTE_TRUSTED_PORT", "CHUTE_ADMIN_PORT",
                     "CHUTE_VAR_DIR", "keeps its ports"):
            self.assertIn(name, out.stdout)
        out = subprocess.run([RUN_SH], capture_output=True, text=True, timeout=30,
                             env={**os.environ, "CHUTE_VAR_DIR": self.var,
                                  "CHUTE_ADMIN_PORT": "70000"})
        self.assertEqual(out.returncode, 1)
        self.assertIn("CHUTE_ADMIN_PORT must be a port number", out.stderr)

    def test_a_copy_on_its_own_ports_and_state_directory(self):
        submission, trusted, admin = free_port(), free_port(), free_port()
        proc, log = self.start(CHUTE_SUBMISSION_PORT=submission, CHUTE_TRUSTED_PORT=trusted,
                               CHUTE_ADMIN_PORT=admin)
        wait_for_port("127.0.0.1", submission, START_DEADLINE_S)
        wait_for_port("127.0.0.1", trusted)
        self.assertTrue(self.admin_ok(admin))
        with open(log) as f:
            self.assertIn(f"swaks --server 127.0.0.1:{submission} -tls", f.read())
        with open(os.path.join(self.var, "demo-password")) as f:
            password = f.read().strip()
        with smtplib.SMTP("127.0.0.1", submission, timeout=30) as c:
            c.starttls(context=ssl._create_unverified_context())  # the demo's self-signed one
            c.login("app@example.test", password)
            c.sendmail("app@example.test", ["alice@example.test"],
                       b"Subject: hello from chute\r\n\r\nIt works.\r\n")
        new = os.path.join(self.var, "mail", "example.test", "alice", "new")
        end = time.monotonic() + 30
        while not (os.path.isdir(new) and os.listdir(new)):
            self.assertLess(time.monotonic(), end, "no message in " + new)
            time.sleep(0.1)
        self.assertEqual(self.stop(proc), 0)

        # Again in the same state directory: chute.toml keeps its ports except the one given.
        admin2 = free_port()
        proc, _ = self.start(CHUTE_ADMIN_PORT=admin2)
        wait_for_port("127.0.0.1", submission, START_DEADLINE_S)
        wait_for_port("127.0.0.1", trusted)
        self.assertTrue(self.admin_ok(admin2))
        with open(os.path.join(self.var, "chute.toml")) as f:
            config = f.read()
        for port in (submission, trusted, admin2):
            self.assertIn(f'"127.0.0.1:{port}"', config)
        self.assertNotIn(f":{admin}\"", config)
        self.assertEqual(self.stop(proc), 0)


if __name__ == "__main__":
    unittest.main()
