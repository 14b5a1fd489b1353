"""A real chuted on loopback for integration tests.

ChutedFixture makes a temporary data directory, a configuration with free loopback ports,
a directory with tenant example.test (domains example.test, corp.test) and the HVE account
app@example.test (alias alias@example.test), starts build/bin/chuted, and stops it with
SIGTERM in tearDown, checking that it exits 0 and that its log holds no sanitizer report (a
TSan or ASan build: `ctest --preset tsan`). The binaries are found through CHUTE_BIN_DIR (set
by ctest), else ../../build/bin.
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
BIN = os.environ.get("CHUTE_BIN_DIR", os.path.join(HERE, "..", "..", "build", "bin"))
CHUTED = os.path.join(BIN, "chuted")
CHUTECTL = os.path.join(BIN, "chutectl")
# The sanitizers the binaries were built with (CMake's CHUTE_SANITIZE, set by ctest): "" for
# a release build, "thread" for the tsan preset.
SANITIZE = os.environ.get("CHUTE_SANITIZE", "")


_ports_given = set()


def free_port(host="127.0.0.1"):
    """A free port, never one this process handed out before: the kernel may give the same
    ephemeral port to two bind(0) calls in a row once the first socket is closed, and a
    listener and the admin listener on one port was a test that hung."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if port not in _ports_given:
            _ports_given.add(port)
            return port


def wait_for_port(host, port, deadline_s=15.0):
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            with socket.create_connection((host, port), timeout=0.5) as s:
                s.recv(1024)
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"chuted did not listen on {host}:{port}")


def make_certificate(directory, name="relay.example.test", algorithm="ec"):
    """A self-signed ECDSA P-256 (or RSA-2048) certificate and key, made with the openssl CLI."""
    cert = os.path.join(directory, "cert.pem")
    key = os.path.join(directory, "key.pem")
    key_options = (["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"] if algorithm == "ec"
                   else ["-newkey", "rsa:2048"])
    subprocess.run(["openssl", "req", "-x509", *key_options, "-nodes", "-days", "30", "-subj",
                    f"/CN={name}", "-keyout", key, "-out", cert], check=True, capture_output=True)
    return cert, key


# The first line of a sanitizer's report on stderr: ThreadSanitizer's "WARNING:
# ThreadSanitizer: data race" (and its FATAL errors), AddressSanitizer's "==PID==ERROR:
# AddressSanitizer: ...", LeakSanitizer's, UBSan's "file:line:col: runtime error: ...".
_SANITIZER_REPORT = re.compile(
    r"^.*(?:WARNING: ThreadSanitizer|FATAL: ThreadSanitizer|ERROR: AddressSanitizer|"
    r"ERROR: LeakSanitizer|: runtime error: ).*$", re.MULTILINE)


def sanitizer_report(text, limit=12000):
    """The sanitizer report(s) in `text` (a process's stderr), from the first one on, or None.
    Under `ctest --preset tsan` (halt_on_error=1) the process exits 66 right after it."""
    if not text:
        return None
    match = _SANITIZER_REPORT.search(text)
    if match is None:
        return None
    start = text.rfind("==================", 0, match.start())
    start = match.start() if start < 0 or match.start() - start > 200 else start
    return text[start:start + limit]


# Satisfies the default password policy (12 characters, 3 of lower, upper, digit, symbol).
APP_PASSWORD = "Correct horse battery staple 9"


def parse_metrics(text):
    """A Prometheus text exposition as {'name{labels}': value}."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def wait_metric(read, name, value, deadline_s=15, who=""):
    """Until read()[name] (0 when absent) is `value`, or an AssertionError after deadline_s."""
    end = time.monotonic() + deadline_s
    while True:
        got = read().get(name, 0)
        if got == value:
            return
        if time.monotonic() > end:
            raise AssertionError(f"{who}{name} is {got}, expected {value}")
        time.sleep(0.1)


class ChutedFixture(unittest.TestCase):
    shards = 2
    extra_limits = ""
    allowed_networks = '["127.0.0.0/8"]'
    with_tls = False  # also a STARTTLS listener (self.tls_port) and an implicit one (smtps_port)
    certificate_algorithm = "ec"
    # More TOML tables appended to the configuration, e.g. a [delivery] table. A subclass may
    # also set self.extra_config before calling setUp() (ports known only at run time).
    extra_config = ""
    # More keys of the [admin] table.
    extra_admin = ""
    # More environment variables for chuted (e.g. NOTIFY_SOCKET); set before setUp().
    extra_env = {}

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="chute-it-")
        self.port = free_port()
        self.admin_port = free_port()
        self.config = os.path.join(self.dir, "chute.toml")
        tls_section = ""
        if self.with_tls:
            self.tls_port = free_port()
            self.smtps_port = free_port()
            self.cert, self.key = make_certificate(self.dir, algorithm=self.certificate_algorithm)
            tls_section = f"""
[[listener]]
address = "127.0.0.1:{self.tls_port}"
tls = "starttls"

[[listener]]
address = "127.0.0.1:{self.smtps_port}"
tls = "implicit"

[tls]
certificate = "{self.cert}"
private_key = "{self.key}"
"""
        with open(self.config, "w") as f:
            f.write(f"""
[server]
hostname = "relay.example.test"
shards = {self.shards}
data_dir = "{self.dir}"
{self.extra_server}

[[listener]]
address = "127.0.0.1:{self.port}"
tls = "none"
allowed_networks = {self.allowed_networks}
authenticate_as = "app@example.test"

{tls_section}
{self.extra_listeners()}
[limits]
{self.extra_limits}
{"" if self.auth_throttle else self.NO_AUTH_THROTTLE}

[admin]
address = "127.0.0.1:{self.admin_port}"
{self.extra_admin}

{self.extra_config}
""")
        self.ctl("tenant", "add", "example.test", "--domain", "example.test", "--domain", "corp.test")
        self.ctl("account", "new", "--tenant", "example.test", "--name", "App",
                 "--primary-smtp-address", "app@example.test", "--password-stdin",
                 stdin=APP_PASSWORD)
        self.ctl("account", "set", "app@example.test", "--add-alias", "alias@example.test")
        self.ctl("account", "new", "--tenant", "example.test", "--name", "Other HVE",
                 "--primary-smtp-address", "hve2@example.test", "--no-password")
        self.log_path = os.path.join(self.dir, "chuted.log")
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen([CHUTED, "--config", self.config], stdout=self.log,
                                     stderr=subprocess.STDOUT, preexec_fn=self._limits,
                                     env={**os.environ, **self.environment()})
        self.addCleanup(self._stop)
        wait_for_port("127.0.0.1", self.port)

    extra_server = ""  # more [server] keys
    # RLIMIT_NOFILE for chuted, to test running out: one number (soft and hard) or a
    # (soft, hard) pair.
    fd_limit = None
    # The failed-AUTH throttle slows every wrong password from 127.0.0.1; only the suites
    # that test it turn it on, so that the others stay fast and independent of each other.
    auth_throttle = False
    NO_AUTH_THROTTLE = ("auth_failure_delay_max_s = 0\nauth_failures_per_ip = 1000000\n"
                        "auth_failures_per_account = 1000000\n"
                        "auth_failed_users_per_ip = 1000000")

    def _limits(self):
        if self.fd_limit is not None:
            import resource
            limit = self.fd_limit if isinstance(self.fd_limit, tuple) else (self.fd_limit,) * 2
            resource.setrlimit(resource.RLIMIT_NOFILE, limit)

    def environment(self):
        """chuted's extra environment: extra_env, plus what a subclass computes once the log
        is open (override and extend)."""
        return dict(self.extra_env)

    def extra_listeners(self):
        """More [[listener]] tables for the configuration (subclasses)."""
        return ""

    def _stop(self):
        try:
            code = None
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    code = self.proc.wait(timeout=40)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
                    code = "killed after 40 s"
            # Also when the test stopped chuted itself, or chuted died under it (a sanitizer
            # build exits at its first report).
            report = sanitizer_report(self.read_log())
            if report is not None:
                self.fail(f"chuted (exit status {self.proc.returncode}) reported:\n{report}")
            if code is not None:
                self.assertEqual(code, 0, "chuted did not stop cleanly:\n" + self.read_log())
        finally:
            self.log.close()
            shutil.rmtree(self.dir, ignore_errors=True)

    def read_log(self):
        with open(self.log_path) as f:
            return f.read()

    def ctl(self, *args, check=True, stdin=None):
        result = subprocess.run([CHUTECTL, "--config", self.config, *args], capture_output=True,
                                text=True, input=stdin)
        report = sanitizer_report(result.stderr)
        if report is not None:
            raise AssertionError(f"chutectl {args} (exit status {result.returncode}) "
                                 f"reported:\n{report}")
        if check and result.returncode != 0:
            raise AssertionError(f"chutectl {args} failed: {result.stderr}")
        return result

    def admin_token(self):
        """The admin token chuted made at its first start (<data_dir>/admin.token)."""
        with open(os.path.join(self.dir, "admin.token")) as f:
            return f.read().strip()

    def admin_request(self, path, method="GET", token=True, headers=None):
        """One request to the admin listener's TCP port: (status, headers, body). `token`:
        True = the admin token, a string = that token, None = no Authorization field."""
        import http.client
        connection = http.client.HTTPConnection("127.0.0.1", self.admin_port, timeout=10)
        fields = dict(headers or {})
        if token is True:
            token = self.admin_token()
        if token is not None:
            fields["Authorization"] = f"Bearer {token}"
        try:
            connection.request(method, path, headers=fields)
            response = connection.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            connection.close()

    def metrics(self):
        """The admin endpoint's /metrics as {'name{labels}': value}."""
        status, _, body = self.admin_request("/metrics")
        assert status == 200, (status, body)
        return parse_metrics(body.decode())

    def wait_metric(self, name, value, deadline_s=15):
        wait_metric(self.metrics, name, value, deadline_s)

    def maildir(self, address):
        local, domain = address.rsplit("@", 1)
        return os.path.join(self.dir, "mail", domain.lower(), local.lower())

    def settle(self, deadline_s=30):
        """Waits until delivery has settled every message the spool holds (250 means spooled;
        delivery follows within milliseconds)."""
        self.wait_metric("chute_spool_messages", 0, deadline_s)

    def messages(self, address):
        self.settle()
        new = os.path.join(self.maildir(address), "new")
        if not os.path.isdir(new):
            return []
        out = []
        for name in sorted(os.listdir(new)):
            with open(os.path.join(new, name), "rb") as f:
                out.append(f.read())
        return out
