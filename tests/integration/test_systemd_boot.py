"""chute as a service under a real systemd: the .deb installed into a Debian booted with
systemd-nspawn, and the whole life of the package there.

Nothing is downloaded. The container's root is this machine's own Debian, as tools/install-deps.sh
left it (systemd, the package's Depends, openssl: Debian packages, installed with apt-get), seen
through an overlay: the lower layer is a read-only, non-recursive bind mount of / (no /proc,
/sys, /dev or other mounts below it), the upper layer a tmpfs, so that nothing done inside
reaches this machine's files and everything is gone when the test ends. In the upper layer,
before the boot: every unit this machine has enabled is masked (the container boots systemd
and chuted only, not this machine's Postfix or PostgreSQL), /etc/machine-id is emptied (a
machine of its own), /usr/bin/kill is hidden (a whiteout: the package must reload chuted
without procps, as on a minimal system), and so is /usr/sbin/policy-rc.d, which Debian's
container images carry to forbid service starts and which a Debian system does not have.

The container is booted with `systemd-nspawn --boot --register=no --keep-unit
--private-network` (no machined needed) and commands run inside through `nsenter -a` into its
init (the child of systemd-nspawn). Mail is sent by this host's python3 in the container's
network namespace only (nsenter -n). The container is powered off (SIGRTMIN+4 to its init;
SIGKILL when that does not do it) in a cleanup, also when a step fails; the mounts are undone
after it, and the scratch directory is removed only once nothing is mounted below it.

Skipped, with the reason, only when it cannot run: not root, a tool missing, or overlayfs
cannot be mounted.
"""

import glob
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import unittest

from test_package import build_package

# What the container needs of this machine besides the package's Depends: systemd as PID 1,
# openssl for the certificate.
REQUIRED_PACKAGES = ["systemd", "openssl"]
TOOLS = ["systemd-nspawn", "nsenter", "dpkg-deb", "dpkg-query", "mount", "umount", "mknod"]
# Hidden in the container (overlay whiteouts): kill, so that reload is shown to need no procps;
# policy-rc.d, which container images of Debian ship to forbid service starts, and which a
# Debian system does not have.
HIDDEN = ["usr/bin/kill", "usr/sbin/policy-rc.d"]
# Enabled units of this machine: masked in the container.
WANTS_GLOB = "/etc/systemd/system/*.wants/*"
PATH = "/usr/sbin:/usr/bin:/sbin:/bin"

PASSWORD = "Correct horse battery staple 9"
# The self-signed certificate as the postinst message and docs/operations.md give it.
SELF_SIGNED = """
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 365 \\
  -subj "/CN=$(hostname)" -keyout /etc/chute/tls/key.pem -out /etc/chute/tls/cert.pem
chgrp chute /etc/chute/tls/key.pem && chmod 0640 /etc/chute/tls/key.pem
"""
# Run by this host's python3 inside the container's network namespace.
SEND = """
import smtplib, ssl, sys
context = ssl.create_default_context()
context.check_hostname = False
context.verify_mode = ssl.CERT_NONE
with smtplib.SMTP("127.0.0.1", 587, timeout=30) as c:
    c.starttls(context=context)
    c.login("app@example.test", sys.argv[1])
    c.sendmail("app@example.test", ["alice@example.test"],
               "From: app@example.test\\r\\nTo: alice@example.test\\r\\n"
               "Subject: " + sys.argv[2] + "\\r\\n\\r\\nSent under systemd.\\r\\n")
"""


def package_list(deb):
    """The packages the container needs of this machine: the .deb's Depends (the first of each
    set of alternatives, without versions) and REQUIRED_PACKAGES, sorted."""
    depends = subprocess.run(["dpkg-deb", "-f", deb, "Depends"], capture_output=True, text=True,
                             check=True).stdout
    names = set(REQUIRED_PACKAGES)
    for group in depends.split(","):
        first = group.split("|")[0].strip()
        if first:
            names.add(re.split(r"[\s(:]", first, maxsplit=1)[0])
    return sorted(names)


def missing_packages(packages):
    """Those of `packages` that dpkg does not have installed on this machine."""
    missing = []
    for name in packages:
        status = subprocess.run(["dpkg-query", "-W", "-f=${Status}", name],
                                capture_output=True, text=True).stdout
        if "install ok installed" not in status:
            missing.append(name)
    return missing


def mount(*argv):
    result = subprocess.run(["mount", *argv], capture_output=True, text=True)
    return result.returncode == 0, result.stderr.strip()


def is_mounted(path):
    """Whether something is mounted at `path`, from /proc/self/mountinfo. Not os.path.ismount:
    a bind mount of / on a directory of the same filesystem has the parent's st_dev, and
    ismount says False for it."""
    path = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            # Field 5 is the mount point, with spaces and the like as octal escapes.
            point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), line.split()[4])
            if point == path:
                return True
    return False


def unmount(path):
    """Unmounts `path` (lazily when busy); True when nothing is mounted there any more."""
    for _ in range(4):  # a path can carry stacked mounts
        if not is_mounted(path):
            return True
        if subprocess.run(["umount", path], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", path], capture_output=True)
    return not is_mounted(path)


def remove_scratch(scratch, mountpoints):
    """Removes `scratch` only when none of `mountpoints` is still mounted: the lower layer is a
    bind mount of this machine's /, which must never be walked by rmtree."""
    if all(unmount(m) for m in reversed(mountpoints)):
        shutil.rmtree(scratch, ignore_errors=True)
    else:
        print(f"left {scratch} in place: a mount below it could not be undone", flush=True)


def bumped_version(deb, directory):
    """A copy of `deb` with its version bumped (+test1): installing it is a real upgrade."""
    tree = os.path.join(directory, "tree")
    subprocess.run(["dpkg-deb", "-R", deb, tree], check=True)
    control = os.path.join(tree, "DEBIAN", "control")
    with open(control) as f:
        text = f.read()
    version = re.search(r"(?m)^Version: (\S+)$", text).group(1)
    with open(control, "w") as f:
        f.write(text.replace(f"Version: {version}\n", f"Version: {version}+test1\n"))
    out = os.path.join(directory, f"chute_{version}+test1.deb")
    subprocess.run(["dpkg-deb", "-Zgzip", "-b", tree, out], check=True, capture_output=True)
    shutil.rmtree(tree)
    return out, version, f"{version}+test1"


@unittest.skipUnless(os.geteuid() == 0, "systemd-nspawn and the mounts need root")
@unittest.skipUnless(all(shutil.which(t) for t in TOOLS),
                     f"needs {', '.join(TOOLS)} (tools/install-deps.sh installs "
                     "systemd-container)")
class SystemdBootTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.deb = build_package()
        missing = missing_packages(package_list(cls.deb))
        if missing:
            raise AssertionError(f"this machine lacks {', '.join(missing)}, which the container "
                                 "takes from it: run tools/install-deps.sh")

    def setUp(self):
        self.started = time.monotonic()
        self.scratch = tempfile.mkdtemp(prefix="chute-nspawn-")
        lower, layer, self.root = (os.path.join(self.scratch, d) for d in ("lower", "layer", "root"))
        for d in (lower, layer, self.root):
            os.makedirs(d)
        mountpoints = [lower, layer, self.root]
        self.addCleanup(remove_scratch, self.scratch, mountpoints)
        # The lower layer: / alone (non-recursive), read-only.
        ok, why = mount("--bind", "/", lower)
        self.assertTrue(ok, f"bind mount of /: {why}")
        ok, why = mount("-o", "remount,bind,ro", lower)
        self.assertTrue(ok, f"read-only remount of the bind of /: {why}")
        ok, why = mount("-t", "tmpfs", "-o", "mode=0755,size=2g", "chute-nspawn", layer)
        self.assertTrue(ok, f"tmpfs: {why}")
        upper, work = os.path.join(layer, "upper"), os.path.join(layer, "work")
        os.makedirs(upper)
        os.makedirs(work)
        self.prepare_upper(upper)
        ok, why = mount("-t", "overlay", "overlay", "-o",
                        f"lowerdir={lower},upperdir={upper},workdir={work}", self.root)
        if not ok:
            raise unittest.SkipTest(f"overlayfs cannot be mounted here: {why}")
        shutil.copy(self.deb, os.path.join(self.root, "root", "chute.deb"))
        upgrade, self.version, self.new_version = bumped_version(self.deb, layer)
        shutil.copy(upgrade, os.path.join(self.root, "root", "chute-upgrade.deb"))
        self.boot()

    @staticmethod
    def prepare_upper(upper):
        """What the container sees differently from this machine (see the module's comment)."""
        system = os.path.join(upper, "etc/systemd/system")
        os.makedirs(system)
        for wanted in glob.glob(WANTS_GLOB):
            name = os.path.basename(wanted)
            if not name.endswith(".target"):
                os.symlink("/dev/null", os.path.join(system, name))
        for name in ("systemd-timesyncd.service", "getty@tty1.service"):
            path = os.path.join(system, name)
            if not os.path.lexists(path):
                os.symlink("/dev/null", path)
        with open(os.path.join(upper, "etc/machine-id"), "w"):
            pass
        for hidden in HIDDEN:
            os.makedirs(os.path.join(upper, os.path.dirname(hidden)), exist_ok=True)
            subprocess.run(["mknod", os.path.join(upper, hidden), "c", "0", "0"], check=True)

    def boot(self):
        self.console = open(os.path.join(self.scratch, "console.log"), "w+")
        self.addCleanup(self.console.close)
        self.nspawn = subprocess.Popen(
            ["systemd-nspawn", "--boot", "--register=no", "--keep-unit", "--private-network",
             "--machine=chute-test", "--console=pipe", "-D", self.root],
            stdin=subprocess.DEVNULL, stdout=self.console, stderr=subprocess.STDOUT)
        self.leader = None
        self.addCleanup(self.poweroff)
        children = f"/proc/{self.nspawn.pid}/task/{self.nspawn.pid}/children"
        deadline = time.monotonic() + 60
        while self.leader is None:
            self.assertIsNone(self.nspawn.poll(), f"systemd-nspawn exited:\n{self.console_text()}")
            self.assertLess(time.monotonic(), deadline, "the container's init did not start")
            try:
                with open(children) as f:
                    pids = f.read().split()
                if pids:
                    self.leader = int(pids[0])
            except OSError:
                pass
            time.sleep(0.1)
        # is-system-running --wait: "running", or "degraded" when a unit of this machine's
        # system failed in a container (not ours: nothing is installed yet).
        while True:
            state = self.run_in("systemctl", "is-system-running", "--wait", check=False,
                                timeout=120).stdout.strip()
            if state in ("running", "degraded"):
                break
            self.assertLess(time.monotonic(), deadline + 60, f"boot: {state}")
            time.sleep(0.5)
        print(f"booted in {time.monotonic() - self.started:.0f} s ({state})", flush=True)

    def poweroff(self):
        if self.nspawn.poll() is None:
            if self.leader is not None:
                try:
                    os.kill(self.leader, signal.SIGRTMIN + 4)  # systemd: poweroff
                except ProcessLookupError:
                    pass
            try:
                self.nspawn.wait(timeout=30)
            except subprocess.TimeoutExpired:
                if self.leader is not None:
                    try:
                        os.kill(self.leader, signal.SIGKILL)  # ends the whole pid namespace
                    except ProcessLookupError:
                        pass
                self.nspawn.kill()
                self.nspawn.wait(timeout=30)
        print(f"test and poweroff in {time.monotonic() - self.started:.0f} s", flush=True)

    def console_text(self):
        self.console.flush()
        self.console.seek(0)
        return self.console.read()[-3000:]

    def run_in(self, *argv, check=True, stdin=None, timeout=120, namespaces=("-a",)):
        """Runs argv inside the container (all its namespaces, its root)."""
        result = subprocess.run(
            ["nsenter", "-t", str(self.leader), *namespaces, "env", "-i", f"PATH={PATH}",
             "HOME=/root", "LANG=C.UTF-8", "DEBIAN_FRONTEND=noninteractive", *argv],
            input=stdin, capture_output=True, text=True, timeout=timeout)
        if check:
            self.assertEqual(result.returncode, 0,
                             f"{argv}:\n{result.stdout}{result.stderr}\n{self.journal()}")
        return result

    def sh(self, script, **kwargs):
        return self.run_in("sh", "-ec", script, **kwargs)

    def journal(self):
        try:
            return subprocess.run(
                ["nsenter", "-t", str(self.leader), "-a", "journalctl", "-u", "chuted",
                 "--no-pager", "-n", "40"], capture_output=True, text=True, timeout=30).stdout
        except (OSError, subprocess.TimeoutExpired):
            return ""

    def unit(self):
        """Properties of chuted.service."""
        out = self.run_in("systemctl", "show", "chuted.service", "-p", "ActiveState", "-p",
                          "SubState", "-p", "MainPID", "-p", "NRestarts", "-p", "Result", "-p",
                          "ExecMainStatus", "-p", "UnitFileState").stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def wait_unit(self, what, predicate, timeout=60):
        deadline = time.monotonic() + timeout
        while True:
            unit = self.unit()
            if predicate(unit):
                return unit
            if time.monotonic() > deadline:
                self.fail(f"not {what} within {timeout} s: {unit}\n{self.journal()}")
            time.sleep(0.2)

    def chuted_log(self):
        return self.run_in("journalctl", "-u", "chuted", "--no-pager", "-o", "cat").stdout

    def send(self, subject):
        self.run_in("python3", "-c", SEND, PASSWORD, subject, namespaces=("-n",))
        new = os.path.join(self.root, "var/lib/chute/mail/example.test/alice/new")
        deadline = time.monotonic() + 30
        while True:
            for name in os.listdir(new) if os.path.isdir(new) else []:
                with open(os.path.join(new, name), "rb") as f:
                    if f"Subject: {subject}".encode() in f.read():
                        return
            self.assertLess(time.monotonic(), deadline, f"'{subject}' is not in {new}")
            time.sleep(0.1)

    def test_install_run_reload_watchdog_upgrade_remove_purge(self):
        # 1. The first install, without a certificate: one readable message, enabled, not
        #    started; a start fails once and is not restarted.
        installed = self.run_in("dpkg", "-i", "/root/chute.deb")
        output = installed.stdout + installed.stderr
        self.assertIn("chute: chuted is enabled but not started: /etc/chute/tls/cert.pem is "
                      "missing.", output)
        self.assertIn("openssl req -x509", output)
        self.assertNotIn("Job for", output)
        self.assertNotIn("deb-systemd-invoke", output)
        unit = self.unit()
        self.assertEqual((unit["UnitFileState"], unit["ActiveState"]), ("enabled", "inactive"))
        self.assertNotEqual(self.run_in("systemctl", "start", "chuted", check=False).returncode,
                            0)
        time.sleep(3)  # Restart= would have started it again ten times by now
        unit = self.unit()
        self.assertEqual((unit["ActiveState"], unit["ExecMainStatus"], unit["NRestarts"]),
                         ("failed", "2", "0"), unit)
        self.assertIn("/etc/chute/tls/cert.pem", self.chuted_log())
        self.run_in("systemctl", "reset-failed", "chuted")

        # 2. The certificate (as the message says), a tenant and an account; then it starts,
        #    with io_uring, in the unit's sandbox, and says the descriptor limit in force.
        self.sh(SELF_SIGNED)
        self.sh("runuser -u chute -- chutectl tenant add example.test --domain example.test")
        self.sh("runuser -u chute -- chutectl account new --tenant example.test --name App "
                "--primary-smtp-address app@example.test --password-stdin", stdin=PASSWORD)
        self.run_in("systemctl", "start", "chuted")
        first = self.wait_unit("started", lambda u: u["SubState"] == "running")
        log = self.chuted_log()
        self.assertRegex(log, r"file descriptors: \d+ \(the hard limit\)")
        self.assertNotIn("raised from", log)

        # 3. A message over STARTTLS with AUTH, into the Maildir.
        self.send("hello from systemd")

        # 4. systemctl reload (ExecReload=: nothing beyond the package; no procps here).
        self.assertFalse(os.path.exists(os.path.join(self.root, "bin/kill")))
        before = self.chuted_log().count("configuration reloaded")
        self.run_in("systemctl", "reload", "chuted")
        deadline = time.monotonic() + 15
        while self.chuted_log().count("configuration reloaded") == before:
            self.assertLess(time.monotonic(), deadline, f"no reload:\n{self.journal()}")
            time.sleep(0.2)
        self.assertIn("certificate reloaded from /etc/chute/tls/cert.pem", self.chuted_log())
        self.assertEqual(self.unit()["MainPID"], first["MainPID"])
        self.send("after the reload")

        # 5. The watchdog: a chuted that stops pinging (SIGSTOP) is killed and restarted. 30 s
        #    is the unit's; a drop-in makes it 4 s here.
        self.sh("mkdir -p /etc/systemd/system/chuted.service.d\n"
                "printf '[Service]\\nWatchdogSec=4s\\n' "
                ">/etc/systemd/system/chuted.service.d/watchdog.conf\n"
                "systemctl daemon-reload\nsystemctl restart chuted")
        watched = self.wait_unit("restarted", lambda u: u["SubState"] == "running")
        self.assertNotEqual(watched["MainPID"], first["MainPID"])
        self.run_in("systemctl", "kill", "--kill-who=main", "--signal=SIGSTOP", "chuted")
        restarted = self.wait_unit(
            "restarted by the watchdog",
            lambda u: (u["SubState"] == "running" and u["MainPID"] not in ("0",
                                                                           watched["MainPID"])),
            timeout=90)
        self.assertEqual(int(restarted["NRestarts"]), int(watched["NRestarts"]) + 1, restarted)
        self.assertIn("Watchdog timeout", self.run_in(
            "journalctl", "--no-pager", "-o", "cat", "_PID=1").stdout)
        self.send("after the watchdog")
        self.sh("rm -r /etc/systemd/system/chuted.service.d\nsystemctl daemon-reload")

        # 6. An upgrade (a higher version of the same package) restarts it.
        running = self.unit()
        self.run_in("dpkg", "-i", "/root/chute-upgrade.deb")
        self.assertEqual(self.run_in("dpkg-query", "-W", "-f=${Version}", "chute").stdout,
                         self.new_version)
        upgraded = self.wait_unit("running after the upgrade", lambda u: u["SubState"] ==
                                  "running")
        self.assertNotEqual(upgraded["MainPID"], running["MainPID"], "not restarted")
        self.send("after the upgrade")

        # 7. systemctl stop drains and stops.
        self.run_in("systemctl", "stop", "chuted")
        unit = self.unit()
        self.assertEqual((unit["ActiveState"], unit["Result"]), ("inactive", "success"), unit)
        self.assertIn("chuted: stopped", self.chuted_log())

        # 8. dpkg -r, then installing again: enabled and started again (the data stayed).
        self.run_in("systemctl", "start", "chuted")
        self.run_in("dpkg", "-r", "chute")
        self.assertFalse(os.path.exists(os.path.join(self.root, "usr/sbin/chuted")))
        self.assertEqual(self.unit()["ActiveState"], "inactive")
        self.run_in("dpkg", "-i", "/root/chute.deb")
        again = self.wait_unit("started on the reinstall", lambda u: u["SubState"] == "running",
                               timeout=30)
        self.assertEqual(again["UnitFileState"], "enabled")
        self.send("after the reinstall")

        # 9. dpkg --purge: stopped, and everything chute made is gone.
        self.run_in("dpkg", "--purge", "chute")
        self.assertEqual(self.unit()["ActiveState"], "inactive")
        for path in ("var/lib/chute", "etc/chute", "lib/systemd/system/chuted.service",
                     "usr/sbin/chuted"):
            self.assertFalse(os.path.lexists(os.path.join(self.root, path)), path)
        self.assertNotEqual(self.run_in("getent", "passwd", "chute", check=False).returncode, 0)
        self.assertNotIn("chuted.service", self.run_in(
            "systemctl", "list-units", "--all", "--failed", "--no-legend").stdout)


if __name__ == "__main__":
    unittest.main()
