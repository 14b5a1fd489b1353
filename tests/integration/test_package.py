"""The Debian package: built by the `deb` CMake target (cpack -G DEB), installed into a scratch
root, checked, and purged; the real system is never touched.

How the scratch root works: `dpkg --root=DIR` keeps its database in DIR/var/lib/dpkg and
unpacks into DIR; with --force-script-chrootless it runs the maintainer scripts on the host
with DPKG_ROOT=DIR instead of chroot()ing (DIR has no shell), and our scripts pass that root
to systemd-sysusers, systemd-tmpfiles and userdel. --force-depends: the scratch database has
none of the libraries the package depends on (they are on the host, where the binaries run).

Also here: `systemd-analyze verify` and `systemd-analyze security --offline=true` on the unit
as installed (skipped without systemd-analyze).
"""

import hashlib
import os
import re
import shutil
import stat
import subprocess
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
BIN = os.environ.get("CHUTE_BIN_DIR", os.path.join(HERE, "..", "..", "build", "bin"))
BUILD = os.path.dirname(os.path.abspath(BIN))
# The security review's ceiling for the unit (systemd's scale: 0 best .. 10 worst).
EXPOSURE_MAX = 2.0

# What the package installs: path -> (mode, owner, group).
PACKAGE_FILES = {
    "/usr/sbin/chuted": (0o755, "root", "root"),
    "/usr/bin/chutectl": (0o755, "root", "root"),
    "/usr/bin/chute-load": (0o755, "root", "root"),
    "/lib/systemd/system/chuted.service": (0o644, "root", "root"),
    "/usr/lib/sysusers.d/chute.conf": (0o644, "root", "root"),
    "/usr/lib/tmpfiles.d/chute.conf": (0o644, "root", "root"),
    "/etc/chute/chute.toml": (0o644, "root", "root"),
    "/usr/share/man/man8/chuted.8.gz": (0o644, "root", "root"),
    "/usr/share/man/man8/chutectl.8.gz": (0o644, "root", "root"),
    "/usr/share/man/man5/chute.toml.5.gz": (0o644, "root", "root"),
    "/usr/share/man/man1/chute-load.1.gz": (0o644, "root", "root"),
    "/usr/share/doc/chute/operations.md": (0o644, "root", "root"),
}
# What the maintainer scripts make.
MADE_DIRS = {
    "/var/lib/chute": (0o750, "chute", "chute"),
    "/etc/chute/tls": (0o750, "root", "chute"),
}
# Host files a scratch install must leave alone.
HOST_FILES = ["/etc/passwd", "/etc/group", "/etc/shadow", "/var/lib/dpkg/status"]


def digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def build_package():
    """Builds the `deb` target (chuted, chutectl, chute-load, the man pages, cpack) and returns
    the .deb."""
    result = subprocess.run(["cmake", "--build", BUILD, "--target", "deb"], capture_output=True,
                            text=True)
    if result.returncode != 0:
        raise AssertionError(f"cmake --build --target deb failed:\n{result.stdout}{result.stderr}")
    debs = [f for f in os.listdir(BUILD) if re.fullmatch(r"chute_.*\.deb", f)]
    if len(debs) != 1:
        raise AssertionError(f"expected one chute_*.deb in {BUILD}, found {debs}")
    return os.path.join(BUILD, debs[0])


@unittest.skipUnless(os.geteuid() == 0, "dpkg --root needs root (to chown)")
@unittest.skipUnless(shutil.which("dpkg") and shutil.which("cpack"), "needs dpkg and cpack")
class PackageTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.host_digests = {p: digest(p) for p in HOST_FILES if os.path.exists(p)}
        cls.deb = build_package()

    def setUp(self):
        self.root = tempfile.mkdtemp(prefix="chute-pkg-")
        self.addCleanup(shutil.rmtree, self.root, True)
        admin = os.path.join(self.root, "var", "lib", "dpkg")
        for sub in ("info", "updates", "triggers"):
            os.makedirs(os.path.join(admin, sub))
        for name in ("status", "available"):
            open(os.path.join(admin, name), "w").close()
        os.makedirs(os.path.join(self.root, "etc"))

    def tearDown(self):
        for path, before in self.host_digests.items():
            self.assertEqual(digest(path), before, f"the host's {path} changed")
        self.assertNotEqual(subprocess.run(["dpkg-query", "-W", "chute"],
                                           capture_output=True).returncode, 0,
                            "chute got installed on the host")

    def dpkg(self, *args):
        result = subprocess.run(["dpkg", f"--root={self.root}", "--force-script-chrootless",
                                 "--force-depends", "--log=/dev/null", *args],
                                capture_output=True, text=True)
        self.assertEqual(result.returncode, 0, f"dpkg {args}:\n{result.stdout}{result.stderr}")
        return result

    def path(self, absolute):
        return os.path.join(self.root, absolute.lstrip("/"))

    def names(self, table):
        """{id: name} from the scratch root's /etc/passwd or /etc/group."""
        out = {}
        with open(self.path(f"/etc/{table}")) as f:
            for line in f:
                fields = line.rstrip("\n").split(":")
                out[int(fields[2])] = fields[0]
        return out

    def assert_owned(self, absolute, mode, owner, group):
        st = os.lstat(self.path(absolute))
        users, groups = self.names("passwd"), self.names("group")
        users.setdefault(0, "root")
        groups.setdefault(0, "root")
        self.assertEqual(oct(stat.S_IMODE(st.st_mode)), oct(mode), absolute)
        self.assertEqual(users.get(st.st_uid), owner, absolute)
        self.assertEqual(groups.get(st.st_gid), group, absolute)

    def test_control_fields(self):
        fields = subprocess.run(["dpkg-deb", "-f", self.deb, "Package", "Depends"],
                                capture_output=True, text=True, check=True).stdout
        self.assertIn("Package: chute", fields)
        for library in ("libc6", "libsystemd0", "liburing2", "android-libboringssl",
                        "libsqlite3-0", "libargon2-1", "libmimalloc2.0"):
            self.assertIn(library, fields)
        listing = subprocess.run(["dpkg-deb", "-c", self.deb], capture_output=True, text=True,
                                 check=True).stdout
        self.assertNotIn("/usr/local", listing)

    def test_install_then_purge(self):
        self.dpkg("--install", self.deb)
        for absolute, (mode, owner, group) in PACKAGE_FILES.items():
            self.assert_owned(absolute, mode, owner, group)
        for absolute, (mode, owner, group) in MADE_DIRS.items():
            self.assert_owned(absolute, mode, owner, group)
        with open(self.path("/etc/passwd")) as f:
            chute = [line for line in f if line.startswith("chute:")]
        self.assertEqual(len(chute), 1)
        self.assertTrue(chute[0].rstrip().endswith(":/var/lib/chute:/usr/sbin/nologin"), chute)
        with open(self.path("/var/lib/dpkg/status")) as f:
            status = f.read()
        self.assertRegex(status, r"Conffiles:\n /etc/chute/chute.toml [0-9a-f]{32}")
        # The example is the production default: it loads, and --check-config stops only at
        # the certificate that is not there yet.
        with open(self.path("/etc/chute/chute.toml")) as f:
            example = f.read()
        for line in ('data_dir = "/var/lib/chute"', 'address = "0.0.0.0:587"',
                     'tls = "starttls"', 'certificate = "/etc/chute/tls/cert.pem"',
                     'address = "127.0.0.1:9587"'):
            self.assertIn(line, example)
        check = subprocess.run([self.path("/usr/sbin/chuted"), "--config",
                                self.path("/etc/chute/chute.toml"), "--check-config"],
                               capture_output=True, text=True)
        self.assertEqual(check.returncode, 2)
        self.assertIn("/etc/chute/tls/cert.pem", check.stderr)
        # A key put in /etc/chute/tls gets 0640 root:chute from tmpfiles.d (as at boot).
        key = self.path("/etc/chute/tls/key.pem")
        with open(key, "w") as f:
            f.write("not a key\n")
        os.chmod(key, 0o600)
        subprocess.run(["systemd-tmpfiles", f"--root={self.root}", "--create", "chute.conf"],
                       check=True, capture_output=True)
        self.assert_owned("/etc/chute/tls/key.pem", 0o640, "root", "chute")
        # Installing again (an upgrade to the same version) keeps working.
        self.dpkg("--install", self.deb)

        self.dpkg("--purge", "chute")
        for absolute in [*PACKAGE_FILES, *MADE_DIRS, "/etc/chute"]:
            self.assertFalse(os.path.lexists(self.path(absolute)), f"{absolute} is still there")
        for table in ("passwd", "group", "shadow", "gshadow"):
            with open(self.path(f"/etc/{table}")) as f:
                self.assertNotRegex(f.read(), r"(?m)^chute:", f"chute still in /etc/{table}")
        status = subprocess.run(["dpkg-query", f"--admindir={self.root}/var/lib/dpkg", "-W",
                                 "-f=${Status}", "chute"], capture_output=True, text=True)
        self.assertNotIn("installed", status.stdout.replace("not-installed", ""))

    @unittest.skipUnless(shutil.which("systemd-analyze"), "needs systemd-analyze")
    def test_unit_verifies_and_is_confined(self):
        self.dpkg("--install", self.deb)
        # verify resolves the unit's dependencies and commands under --root: give the scratch
        # root systemd's own units, as a real system has them. Nothing else: every command the
        # unit runs must come with the package (was: a copy of the host's /bin/kill here hid
        # that ExecReload= needed procps, which the package does not depend on).
        shutil.copytree("/lib/systemd/system", self.path("/lib/systemd/system"),
                        symlinks=True, dirs_exist_ok=True)
        verify = subprocess.run(["systemd-analyze", "verify", "--man=no", f"--root={self.root}",
                                 "chuted.service"], capture_output=True, text=True)
        self.assertEqual(verify.returncode, 0, verify.stderr)
        self.assertEqual(verify.stdout + verify.stderr, "", "verify is not clean")

        security = subprocess.run(
            ["systemd-analyze", "security", "--offline=true", f"--root={self.root}",
             "--threshold=20", "--no-pager", "chuted.service"], capture_output=True, text=True)
        self.assertEqual(security.returncode, 0, security.stdout + security.stderr)
        match = re.search(r"Overall exposure level for chuted\.service: (\d+\.\d)",
                          security.stdout)
        self.assertIsNotNone(match, security.stdout)
        self.assertLessEqual(float(match.group(1)), EXPOSURE_MAX, security.stdout)
        # io_uring stays allowed: @system-service holds @aio, which holds the three calls.
        for group in ("@system-service", "@aio"):
            listing = subprocess.run(["systemd-analyze", "syscall-filter", group],
                                     capture_output=True, text=True).stdout
            if group == "@system-service":
                self.assertIn("@aio", listing)
            else:
                for call in ("io_uring_setup", "io_uring_enter", "io_uring_register"):
                    self.assertIn(call, listing)
        with open(self.path("/lib/systemd/system/chuted.service")) as f:
            unit = f.read()
        self.assertIn("SystemCallFilter=@system-service", unit)
        denied = " ".join(re.findall(r"(?m)^SystemCallFilter=~(.*)$", unit))
        for group in denied.split():
            listing = subprocess.run(["systemd-analyze", "syscall-filter", group],
                                     capture_output=True, text=True).stdout
            self.assertNotIn("io_uring", listing, f"{group} denies io_uring")
        self.assertIn("ExecStart=/usr/sbin/chuted ", unit)
        for command in re.findall(r"(?m)^Exec[A-Za-z]+=[-@:+!]*(\S+)", unit):
            self.assertIn(command, PACKAGE_FILES, "a command the package does not install")


class ManPageTest(unittest.TestCase):
    """chute.toml(5) documents every key the configuration loader reads."""

    def test_every_configuration_key_is_documented(self):
        source = os.path.join(HERE, "..", "..")
        with open(os.path.join(source, "src", "base", "config.cc")) as f:
            loader = f.read()
        with open(os.path.join(source, "docs", "man", "chute.toml.5.scd")) as f:
            page = f.read()
        keys = set(re.findall(r'r\.(?:Int|String|Bool|CidrList|Enum<[^>]+>)\(\s*"([a-z0-9_]+)"',
                              loader))
        self.assertGreater(len(keys), 50)
        tables = re.findall(r"TableReader r\(table, \"([a-z]+)\"", loader)
        for table in tables:
            self.assertRegex(page, rf"# \[\[?{table}\]\]?", table)
        missing = sorted(k for k in keys if f"*{k}* = " not in page)
        self.assertEqual(missing, [], "keys missing from chute.toml(5)")


if __name__ == "__main__":
    unittest.main()
