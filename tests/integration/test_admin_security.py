"""The admin listener's trust boundary, attacked as issue 16 found it open: a second local user
(uid 65534, `nobody`) reading and dropping mail over the HTTP port, a web page in the operator's
browser (a cross-site form, DNS rebinding), a non-loopback address accepted silently, an
impostor on chutectl's way in, escape sequences printed raw, and an answer dripped for ever.
Each replays the attack against the real chuted and chutectl; on the code before the fix each
of them got through."""

import http.client
import json
import os
import shutil
import socket
import stat
import subprocess
import tempfile
import threading
import time
import unittest

from chute_fixture import CHUTECTL, CHUTED, ChutedFixture, free_port
from test_delivery import DeliveryFixture, FakeSmtp, delivery_config, wait_until

NOBODY = 65534


def as_nobody(*argv, stdin=None, timeout=30):
    """`argv` run as uid/gid 65534 with no supplementary groups."""
    return subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                           "--", *argv], capture_output=True, text=True, input=stdin,
                          timeout=timeout)


def nobody_http(port, method, path, headers=None):
    """One HTTP request from uid 65534 (Debian's python, which that user can run): status."""
    script = (
        "import http.client, json, sys\n"
        f"c = http.client.HTTPConnection('127.0.0.1', {port}, timeout=10)\n"
        f"c.request({method!r}, {path!r}, headers={headers or {}!r})\n"
        "r = c.getresponse(); body = r.read()\n"
        "print(r.status); sys.stdout.write(body.decode('utf-8', 'replace'))\n")
    out = as_nobody("/usr/bin/python3", "-c", script)
    assert out.returncode == 0, out.stderr
    status, _, body = out.stdout.partition("\n")
    return int(status), body


class AdminAuthenticationTest(DeliveryFixture):
    """A queued message that a second local user must not see nor touch. Delivery goes to
    FakeSmtp, which defers wait@ (451) with retries an hour apart: the message stays queued."""

    def setUp(self):
        self.server = FakeSmtp()
        self.addCleanup(self.server.stop)
        self.server.reject["wait@example.test"] = "451 4.2.0 Mailbox busy, try later"
        self.extra_config = delivery_config("smtp", f"127.0.0.1:{self.server.port}",
                                            retry_initial_s=3600, retry_max_s=3600)
        super().setUp()
        self.queue_id = self.send(["wait@example.test"], "secret")
        wait_until(lambda: (self.queue_entry(self.queue_id) or {}).get("attempts", 0) >= 1,
                   "the first attempt", 30)

    def test_a_second_local_user_can_neither_read_nor_change_the_queue(self):
        # Was: 200 for every one of these, and DELETE dropped the mail.
        for method, path in [("GET", "/queue"), ("GET", f"/queue/{self.queue_id}"),
                             ("GET", "/dead"), ("GET", "/usage"),
                             ("POST", f"/queue/{self.queue_id}/hold"),
                             ("DELETE", f"/queue/{self.queue_id}"),
                             ("POST", "/usage/ticket"), ("GET", "/metrics")]:
            with self.subTest(method=method, path=path):
                status, body = nobody_http(self.admin_port, method, path)
                self.assertEqual(status, 401, body)
                self.assertNotIn("wait@example.test", body)
        self.assertIsNotNone(self.queue_entry(self.queue_id))
        self.assertFalse(self.queue_entry(self.queue_id)["held"])
        # A made-up token, Basic credentials and a cookie are not credentials either.
        for headers in [{"Authorization": "Bearer " + "0" * 64},
                        {"Authorization": "Basic YWRtaW46YWRtaW4="},
                        {"Cookie": f"token={self.admin_token()}"}]:
            with self.subTest(headers=headers):
                self.assertEqual(nobody_http(self.admin_port, "GET", "/queue", headers)[0], 401)
        # /healthz stays open.
        self.assertEqual(nobody_http(self.admin_port, "GET", "/healthz")[0], 200)

    def test_the_token_and_the_socket_are_root_and_chuteds_only(self):
        token = os.path.join(self.dir, "admin.token")
        self.assertEqual(stat.S_IMODE(os.stat(token).st_mode), 0o600)
        self.assertEqual(len(self.admin_token()), 64)
        sock = os.path.join(self.dir, "admin.sock")
        self.assertTrue(stat.S_ISSOCK(os.stat(sock).st_mode))
        self.assertEqual(stat.S_IMODE(os.stat(sock).st_mode), 0o600)
        out = as_nobody("/usr/bin/cat", token)
        self.assertNotEqual(out.returncode, 0)
        # chutectl as that user: told why, nothing shown.
        ctl = self.nobody_chutectl()
        out = as_nobody(ctl, "--config", self.config, "queue", "list")
        self.assertEqual(out.returncode, 2, out.stderr)
        self.assertNotIn("wait@example.test", out.stdout + out.stderr)

    def nobody_chutectl(self):
        """A copy of chutectl and of the configuration that uid 65534 can read."""
        scratch = tempfile.mkdtemp(prefix="chute-nobody-")
        self.addCleanup(shutil.rmtree, scratch, True)
        os.chmod(scratch, 0o755)
        ctl = os.path.join(scratch, "chutectl")
        shutil.copy(CHUTECTL, ctl)
        os.chmod(ctl, 0o755)
        os.chmod(self.dir, 0o711)  # the configuration is read; data_dir's files stay 0600
        self.addCleanup(os.chmod, self.dir, 0o700)
        os.chmod(self.config, 0o644)
        return ctl

    def test_the_unix_socket_refuses_another_user_even_when_it_can_reach_it(self):
        # The directory is what keeps others out; were it open, chuted still checks the uid.
        os.chmod(self.dir, 0o711)
        self.addCleanup(os.chmod, self.dir, 0o700)
        os.chmod(os.path.join(self.dir, "admin.sock"), 0o666)
        script = (
            "import socket\n"
            f"s = socket.socket(socket.AF_UNIX); s.connect({os.path.join(self.dir, 'admin.sock')!r})\n"
            # chuted answers 403 at once, before reading anything
            "data = b''\n"
            "while True:\n"
            "    b = s.recv(65536)\n"
            "    if not b: break\n"
            "    data += b\n"
            "print(data.decode('utf-8', 'replace'))\n")
        out = as_nobody("/usr/bin/python3", "-c", script)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertTrue(out.stdout.startswith("HTTP/1.1 403"), out.stdout)
        self.assertNotIn("wait@example.test", out.stdout)
        # Root (the test) comes in through the socket without a token: that is chutectl's way.
        self.assertEqual(self.queue_entry(self.queue_id)["id"], self.queue_id)

    def test_a_web_page_cannot_use_the_operators_browser(self):
        hold = f"/queue/{self.queue_id}/hold"
        # A cross-site form: the browser sends Origin and Sec-Fetch-Site, no Authorization.
        status, _, _ = self.admin_request(hold, "POST", token=None, headers={
            "Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site",
            "Content-Type": "application/x-www-form-urlencoded"})
        self.assertEqual(status, 403)
        # Even with the token, a foreign Origin or a cross-site fetch is refused.
        for headers in [{"Origin": "https://evil.example"}, {"Origin": "null"},
                        {"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site"}]:
            with self.subTest(headers=headers):
                self.assertEqual(self.admin_request(hold, "POST", headers=headers)[0], 403)
        self.assertFalse(self.queue_entry(self.queue_id)["held"])
        # DNS rebinding: a name that resolves to 127.0.0.1 but is not this listener's.
        status, _, body = self.admin_request("/queue", headers={
            "Host": f"rebind.evil.example:{self.admin_port}"})
        self.assertEqual(status, 421, body)
        self.assertNotIn(b"wait@example.test", body)
        # Its own names are served: the configured address, localhost, a loopback literal.
        for host in [f"127.0.0.1:{self.admin_port}", f"localhost:{self.admin_port}",
                     "127.0.0.2", f"[::1]:{self.admin_port}"]:
            with self.subTest(host=host):
                self.assertEqual(self.admin_request("/queue", headers={"Host": host})[0], 200)
        # The same origin is fine (a script the operator runs, a page of the listener's own).
        status, _, _ = self.admin_request(hold, "POST", headers={
            "Origin": f"http://127.0.0.1:{self.admin_port}", "Sec-Fetch-Site": "same-origin"})
        self.assertEqual(status, 200)
        self.assertTrue(self.queue_entry(self.queue_id)["held"])
        # Nothing answers in a way a cross-origin script could read, and nothing is cached.
        _, headers, _ = self.admin_request("/queue")
        self.assertNotIn("Access-Control-Allow-Origin", headers)
        self.assertEqual(headers.get("Cache-Control"), "no-store")

    def test_a_ticket_opens_the_usage_page_and_nothing_else(self):
        out = self.ctl("--json", "report", "--link", "--days", "30")
        link = json.loads(out.stdout)
        url = link["url"]
        self.assertTrue(url.startswith(f"http://127.0.0.1:{self.admin_port}/usage?ticket="), url)
        self.assertIn("&days=30", url)
        path = url.split(str(self.admin_port), 1)[1]
        status, headers, body = self.admin_request(path, token=None)
        self.assertEqual(status, 200, body)
        self.assertIn("frame-ancestors 'none'", headers["Content-Security-Policy"])
        self.assertEqual(headers["Referrer-Policy"], "no-referrer")
        ticket = path.split("ticket=", 1)[1].split("&", 1)[0]
        self.assertIn(f"ticket={ticket}".encode(), body)  # the page's links keep it
        # Not for the queue, not forged, not expired, not with a longer life than 15 minutes.
        self.assertEqual(self.admin_request(f"/queue?ticket={ticket}", token=None)[0], 401)
        expiry, mac = ticket.split(".")
        forged = f"{int(expiry) + 60}.{mac}"
        self.assertEqual(self.admin_request(f"/usage?ticket={forged}", token=None)[0], 401)
        self.assertEqual(self.admin_request(f"/usage?ticket=1.{mac}", token=None)[0], 401)
        # The human form says how long it lasts.
        out = self.ctl("report", "--link")
        self.assertIn("/usage?ticket=", out.stdout)
        self.assertIn("until", out.stdout)


class MetricsTokenTest(ChutedFixture):
    """/metrics: the admin token, or a metrics-only token the operator gives Prometheus."""

    def setUp(self):
        self.metrics_token = "m" * 40
        self.token_dir = tempfile.mkdtemp(prefix="chute-metrics-")
        self.addCleanup(shutil.rmtree, self.token_dir, True)
        token_file = os.path.join(self.token_dir, "metrics.token")
        with open(token_file, "w") as f:
            f.write(self.metrics_token + "\n")
        os.chmod(token_file, 0o640)
        self.extra_admin = f'metrics_token_file = "{token_file}"'
        super().setUp()

    def test_the_metrics_token_reads_metrics_and_nothing_else(self):
        self.assertEqual(self.admin_request("/metrics", token=None)[0], 401)
        status, _, body = self.admin_request("/metrics", token=self.metrics_token)
        self.assertEqual(status, 200)
        self.assertIn(b"chute_", body)
        self.assertEqual(self.admin_request("/queue", token=self.metrics_token)[0], 403)
        self.assertEqual(self.admin_request("/metrics")[0], 200)  # the admin token too


class MetricsOpenTest(ChutedFixture):
    extra_admin = "metrics_open = true"

    def test_metrics_open_opens_metrics_only(self):
        self.assertEqual(self.admin_request("/metrics", token=None)[0], 200)
        self.assertEqual(self.admin_request("/queue", token=None)[0], 401)


class AdminConfigurationTest(unittest.TestCase):
    """Start-up refusals: chuted says why and does not start."""

    def start(self, admin_table, prepare=None):
        scratch = tempfile.mkdtemp(prefix="chute-adm-")
        self.addCleanup(shutil.rmtree, scratch, True)
        config = os.path.join(scratch, "chute.toml")
        with open(config, "w") as f:
            f.write(f"""
[server]
hostname = "relay.example.test"
data_dir = "{scratch}"

[[listener]]
address = "127.0.0.1:{free_port()}"
tls = "none"
allowed_networks = ["127.0.0.0/8"]
authenticate_as = "app@example.test"

[admin]
{admin_table}
""")
        if prepare is not None:
            for args in [("tenant", "add", "example.test", "--domain", "example.test"),
                         ("account", "new", "--tenant", "example.test", "--name", "App",
                          "--primary-smtp-address", "app@example.test", "--no-password")]:
                subprocess.run([CHUTECTL, "--config", config, *args], check=True,
                               capture_output=True)
            prepare(scratch)
        proc = subprocess.run([CHUTED, "--config", config], capture_output=True, text=True,
                              timeout=60)
        return proc

    def test_a_non_loopback_admin_address_is_refused_with_the_reason(self):
        # Was: accepted silently, plain HTTP on every interface.
        for address in ["0.0.0.0", "[::]", "192.0.2.1"]:
            with self.subTest(address=address):
                proc = self.start(f'address = "{address}:{free_port()}"')
                self.assertNotEqual(proc.returncode, 0)
                self.assertIn("is not a loopback address", proc.stderr)
                self.assertIn("ssh -L", proc.stderr)

    def test_a_token_file_others_can_read_is_refused(self):
        def loose(scratch):
            path = os.path.join(scratch, "admin.token")
            with open(path, "w") as f:
                f.write("t" * 64 + "\n")
            os.chmod(path, 0o644)
        proc = self.start(f'address = "127.0.0.1:{free_port()}"', loose)
        self.assertNotEqual(proc.returncode, 0)
        self.assertIn("lets other users read the token; chmod 600", proc.stderr)


class FakeAdmin:
    """A server on a unix socket answering every request with `answer`, dripped one byte per
    `drip_s` when set: an impostor, or a broken chuted."""

    def __init__(self, path, answer, drip_s=0.0):
        self.path, self.answer, self.drip_s = path, answer, drip_s
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.bind(path)
        self.sock.listen(8)
        self.stopping = False
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        while not self.stopping:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            try:
                conn.recv(65536)
                if self.drip_s:
                    for b in self.answer:
                        if self.stopping:
                            break
                        conn.sendall(bytes([b]))
                        time.sleep(self.drip_s)
                else:
                    conn.sendall(self.answer)
            except OSError:
                pass
            finally:
                conn.close()

    def stop(self):
        self.stopping = True
        self.sock.close()


def http_answer(body):
    return (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " +
            str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)


class ChutectlAgainstImpostorsTest(unittest.TestCase):
    """chutectl's way in: it believes only root or the data directory's owner on the socket,
    escapes what it prints, and gives up at its deadline."""

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="chute-imp-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.socket = os.path.join(self.dir, "run", "admin.sock")
        os.mkdir(os.path.dirname(self.socket))
        self.config = os.path.join(self.dir, "chute.toml")
        with open(self.config, "w") as f:
            f.write(f"""
[server]
hostname = "relay.example.test"
data_dir = "{self.dir}"

[admin]
socket = "{self.socket}"
""")

    def ctl(self, *args):
        return subprocess.run([CHUTECTL, "--config", self.config, *args], capture_output=True,
                              timeout=60)

    def test_a_socket_served_by_another_user_is_not_believed(self):
        # Another user got to the socket's place first (its directory let them).
        os.chmod(self.dir, 0o711)
        os.chmod(os.path.dirname(self.socket), 0o777)
        ready = os.path.join(self.dir, "run", "ready")
        script = (
            "import socket, os\n"
            f"s = socket.socket(socket.AF_UNIX); s.bind({self.socket!r}); s.listen(4)\n"
            f"os.chmod({self.socket!r}, 0o666); open({ready!r}, 'w').close()\n"
            "while True:\n"
            "    c, _ = s.accept(); c.recv(65536)\n"
            "    c.sendall(b'HTTP/1.1 200 OK\\r\\nContent-Length: 2\\r\\n\\r\\n[]')\n"
            "    c.close()\n")
        impostor = subprocess.Popen(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}",
                                     "--clear-groups", "--", "/usr/bin/python3", "-c", script])
        self.addCleanup(impostor.wait)
        self.addCleanup(impostor.kill)
        wait_until(lambda: os.path.exists(ready), "the impostor", 10)
        out = self.ctl("queue", "list")
        self.assertEqual(out.returncode, 2, out.stderr)
        self.assertIn(b"is served by uid 65534", out.stderr)
        self.assertIn(b"that is not chuted", out.stderr)
        self.assertNotIn(b"The queue is empty", out.stdout)

    def test_escape_sequences_from_the_server_are_printed_escaped(self):
        # A recipient with CSI (U+009B), a sender with ESC, and a reply with a BEL.
        entry = {"id": "0123456789ABCDEFGHJKMNP", "age_s": 5, "sender": "a\x1b[2Jb@example.test",
                 "attempts": 1, "held": False, "next_attempt": "2026-01-01T00:00:00Z",
                 "recipients_pending": [{"address": "x\u009b31my@example.test",
                                         "last_reply": "451 busy\x07"}]}
        body = json.dumps([entry]).encode()
        fake = FakeAdmin(self.socket, http_answer(body))
        self.addCleanup(fake.stop)
        for args in [("queue", "list"), ("--json", "queue", "list")]:
            with self.subTest(args=args):
                out = self.ctl(*args)
                self.assertEqual(out.returncode, 0, out.stderr)
                for raw in [b"\x1b", b"\xc2\x9b", b"\x9b", b"\x07"]:
                    self.assertNotIn(raw, out.stdout)
                self.assertIn(b"\\u009b", out.stdout)
                self.assertIn(b"\\u001b", out.stdout)
        # --json is still JSON, and means the same characters.
        parsed = json.loads(self.ctl("--json", "queue", "list").stdout)
        self.assertEqual(parsed[0]["recipients_pending"][0]["address"], "x\u009b31my@example.test")
        # An error message from the server is escaped on stderr too.
        fake.stop()
        os.unlink(self.socket)
        bad = json.dumps({"error": "no\x1b]0;pwned\x07"}).encode()
        fake = FakeAdmin(self.socket, b"HTTP/1.1 404 Not Found\r\nContent-Length: " +
                         str(len(bad)).encode() + b"\r\n\r\n" + bad)
        self.addCleanup(fake.stop)
        out = self.ctl("queue", "show", "0123456789ABCDEFGHJKMNP")
        self.assertEqual(out.returncode, 2)
        self.assertNotIn(b"\x1b", out.stderr)
        self.assertIn(b"\\u001b]0;pwned", out.stderr)

    def test_a_dripping_server_meets_the_deadline(self):
        # Was: a dripping endpoint kept chutectl waiting 20 s and more (10 s per byte).
        fake = FakeAdmin(self.socket, http_answer(b"[]" + b" " * 200), drip_s=0.5)
        self.addCleanup(fake.stop)
        start = time.monotonic()
        out = self.ctl("queue", "list")
        elapsed = time.monotonic() - start
        self.assertEqual(out.returncode, 2)
        self.assertIn(b"no whole answer from chuted in 10s", out.stderr)
        self.assertLess(elapsed, 30)  # a deadline, not a timing claim: 10 s + start-up


if __name__ == "__main__":
    unittest.main()
