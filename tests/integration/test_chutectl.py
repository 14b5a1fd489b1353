"""chutectl against a fresh directory database: every command, --json, and the error paths
with their exit codes (0 success, 1 usage, 2 failure)."""

import json
import os
import shutil
import subprocess
import tempfile
import unittest

from chute_fixture import CHUTECTL


class ChutectlTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="chutectl-")
        self.config = os.path.join(self.dir, "c.toml")
        with open(self.config, "w") as f:
            f.write(f'[server]\ndata_dir = "{self.dir}"\n[limits]\naccounts_per_tenant = 3\n')
        self.addCleanup(shutil.rmtree, self.dir, True)

    def ctl(self, *args, stdin=None):
        return subprocess.run([CHUTECTL, "--config", self.config, *args], capture_output=True,
                              text=True, input=stdin, timeout=60)

    def ok(self, *args, stdin=None):
        out = self.ctl(*args, stdin=stdin)
        self.assertEqual(out.returncode, 0, out.stderr)
        return out

    def fails(self, code, message, *args, stdin=None):
        out = self.ctl(*args, stdin=stdin)
        self.assertEqual(out.returncode, code, (args, out.stdout, out.stderr))
        self.assertIn(message, out.stderr)

    def test_help(self):
        out = subprocess.run([CHUTECTL, "--help"], capture_output=True, text=True)
        self.assertEqual(out.returncode, 0)
        self.assertIn("tenant add NAME --domain D", out.stdout)

    def test_tenant_lifecycle(self):
        self.ok("tenant", "add", "contoso", "--domain", "Contoso.TEST")
        shown = json.loads(self.ok("--json", "tenant", "show", "contoso").stdout)
        self.assertEqual(shown["domains"], ["contoso.test"])
        self.assertTrue(shown["basic_auth"])
        self.ok("tenant", "set", "contoso", "--basic-auth", "off", "--add-domain", "fabrikam.test",
                "--oauth-issuer", "https://login.example.test/t/v2.0")
        shown = json.loads(self.ok("--json", "tenant", "show", "contoso").stdout)
        self.assertFalse(shown["basic_auth"])
        self.assertEqual(shown["domains"], ["contoso.test", "fabrikam.test"])
        listed = json.loads(self.ok("--json", "tenant", "list").stdout)
        self.assertEqual([t["name"] for t in listed], ["contoso"])
        self.fails(2, "already exists", "tenant", "add", "contoso", "--domain", "other.test")
        self.fails(2, "already belongs to a tenant", "tenant", "add", "second",
                   "--domain", "contoso.test")
        self.fails(2, "at least one accepted domain", "tenant", "add", "third")
        self.fails(2, "not a tenant name", "tenant", "add", "bad name", "--domain", "x.test")
        self.fails(2, "not a domain name", "tenant", "set", "contoso", "--add-domain", "no_way")
        self.fails(1, "--basic-auth takes on or off", "tenant", "set", "contoso", "--basic-auth", "maybe")
        self.ok("tenant", "remove", "contoso")
        self.fails(2, "no tenant", "tenant", "show", "contoso")

    def test_account_lifecycle_and_rules(self):
        self.ok("tenant", "add", "contoso", "--domain", "contoso.test", "--domain", "fabrikam.test")
        created = json.loads(self.ok("--json", "account", "new", "--tenant", "contoso", "--name",
                                     "HVE account", "--primary-smtp-address", "hve@contoso.test",
                                     "--password-stdin", stdin="s3cret\n").stdout)
        self.assertTrue(created["has_password"])
        self.fails(2, "already used", "account", "new", "--tenant", "contoso", "--name", "Dup",
                   "--primary-smtp-address", "HVE@contoso.test")
        self.fails(2, "already exists", "account", "new", "--tenant", "contoso", "--name",
                   "hve ACCOUNT", "--primary-smtp-address", "x@contoso.test")
        self.fails(2, "not an accepted domain", "account", "new", "--tenant", "contoso", "--name",
                   "Out", "--primary-smtp-address", "out@elsewhere.test")
        self.fails(2, "not an email address", "account", "new", "--tenant", "contoso", "--name",
                   "Bad", "--primary-smtp-address", "not-an-address")
        self.fails(1, "needs --name and --primary-smtp-address", "account", "new",
                   "--tenant", "contoso")
        self.ok("account", "new", "--tenant", "contoso", "--name", "Two",
                "--primary-smtp-address", "two@contoso.test")
        self.ok("account", "new", "--tenant", "contoso", "--name", "Three",
                "--primary-smtp-address", "three@contoso.test")
        self.fails(2, "already has 3 accounts", "account", "new", "--tenant", "contoso", "--name",
                   "Four", "--primary-smtp-address", "four@contoso.test")
        # ID by display name, set, aliases, settings, app access.
        self.ok("account", "set", "HVE account", "--display-name", "Renamed",
                "--primary-smtp-address", "hve@fabrikam.test", "--add-alias", "alias@contoso.test")
        shown = json.loads(self.ok("--json", "account", "show", "Renamed").stdout)
        self.assertEqual(shown["primary_smtp_address"], "hve@fabrikam.test")
        self.assertEqual(shown["aliases"], ["alias@contoso.test"])
        self.fails(2, "already used", "account", "set", "two@contoso.test", "--add-alias",
                   "alias@contoso.test")
        self.ok("settings", "set", "Renamed", "--reply-to", "marketing@contoso.test")
        got = json.loads(self.ok("--json", "settings", "get", "hve@fabrikam.test").stdout)
        self.assertEqual(got["reply_to"], "marketing@contoso.test")
        self.ok("settings", "set", "Renamed", "--reply-to", "")
        apps = [f"{i:08x}-0000-4000-8000-000000000000" for i in range(11)]
        self.ok("app-access", "add", "Renamed", "--app-id", *apps[:10])
        self.fails(2, "at most 10 applications", "app-access", "add", "Renamed", "--app-id", apps[10])
        self.fails(2, "not an application id", "app-access", "add", "Renamed", "--app-id", "nope")
        self.ok("app-access", "remove", "Renamed", "--app-id", apps[0])
        self.ok("account", "password", "two@contoso.test", "--password-stdin", stdin="new-pass\n")
        self.fails(2, "must be 1..", "account", "password", "two@contoso.test",
                   "--password-stdin", stdin="")
        listed = json.loads(self.ok("--json", "account", "list", "--tenant", "contoso").stdout)
        self.assertEqual(len(listed), 3)
        # Removal rules.
        self.fails(2, "has 3 account(s)", "tenant", "remove", "contoso")
        self.fails(2, "is used by the account", "tenant", "set", "contoso", "--remove-domain",
                   "fabrikam.test")
        self.fails(1, "needs --yes", "account", "remove", "two@contoso.test")
        self.ok("account", "remove", "two@contoso.test", "--yes")
        self.fails(2, "no account", "account", "show", "two@contoso.test")
        self.ok("tenant", "remove", "contoso", "--force")
        self.assertEqual(json.loads(self.ok("--json", "account", "list").stdout), [])

    def test_cmdlet_aliases(self):
        self.ok("tenant", "add", "contoso", "--domain", "contoso.com")
        self.ok("New-MailUser", "-HVEAccount", "-Name", "HVE, account",
                "-PrimarySmtpAddress", "hve@contoso.com")
        shown = json.loads(self.ok("--json", "Get-MailUser", "-HVEAccount", "-Identity",
                                   "hve@contoso.com").stdout)
        self.assertEqual(shown["display_name"], "HVE, account")
        self.assertEqual(shown["tenant"], "contoso")  # from the domain
        listed = json.loads(self.ok("--json", "get-mailuser", "-hveaccount").stdout)
        self.assertEqual(len(listed), 1)
        self.ok("Set-MailUser", "-HVEAccount", "-Identity", "hve@contoso.com", "-DisplayName",
                "Renamed")
        self.ok("Set-HVEAccountSettings", "-Identity", "hve@contoso.com", "-ReplyTo",
                "marketing@contoso.com")
        got = json.loads(self.ok("--json", "Get-HVEAccountSettings", "-Identity", "Renamed").stdout)
        self.assertEqual(got["reply_to"], "marketing@contoso.com")
        apps = "11111111-0000-4000-8000-000000000000,22222222-0000-4000-8000-000000000000"
        added = json.loads(self.ok("--json", "Add-HVEAppAccess", "-Identity", "Renamed",
                                   "-AppId", apps).stdout)
        self.assertEqual(len(added["allowed_apps"]), 2)
        self.ok("Remove-HVEAppAccess", "-Identity", "Renamed", "-AppId",
                "11111111-0000-4000-8000-000000000000")
        self.fails(1, "add -HVEAccount", "New-MailUser", "-Name", "X", "-PrimarySmtpAddress",
                   "x@contoso.com")
        self.fails(1, "unsupported parameter -Bogus", "Set-MailUser", "-HVEAccount", "-Identity",
                   "Renamed", "-Bogus", "1")
        self.fails(1, "needs --yes", "Remove-MailUser", "-Identity", "Renamed")
        self.ok("Remove-MailUser", "-Identity", "Renamed", "-Confirm:$false")
        self.assertEqual(json.loads(self.ok("--json", "account", "list").stdout), [])

    def test_argon2_cost_comes_from_the_configuration(self):
        with open(self.config, "a") as f:
            f.write("[passwords]\nargon2_memory_kib = 8192\nargon2_passes = 3\n")
        self.ok("tenant", "add", "contoso", "--domain", "contoso.test")
        self.ok("account", "new", "--name", "A", "--primary-smtp-address", "a@contoso.test",
                "--password-stdin", stdin="pw")
        import sqlite3
        db = sqlite3.connect(os.path.join(self.dir, "directory.db"))
        (stored,) = db.execute("SELECT password_hash FROM accounts").fetchone()
        self.assertIn("$argon2id$v=19$m=8192,t=3,p=1$", stored)

    def test_report(self):
        import datetime
        import sqlite3
        self.ok("tenant", "add", "contoso", "--domain", "contoso.test")
        self.ok("tenant", "add", "fabrikam", "--domain", "fabrikam.test")
        self.ok("account", "new", "--name", "A", "--primary-smtp-address", "a@contoso.test")
        today = datetime.datetime.now(datetime.timezone.utc).date()
        old = today - datetime.timedelta(days=10)
        db = sqlite3.connect(os.path.join(self.dir, "directory.db"))
        db.executemany("INSERT INTO usage VALUES (?, ?, ?, ?, ?, ?)", [
            (1, today.isoformat(), "a@contoso.test", "contoso", 3, 6),
            (1, old.isoformat(), "a@contoso.test", "contoso", 5, 50),
            (9, today.isoformat(), "gone@fabrikam.test", "fabrikam", 1, 1),
        ])
        db.commit()
        week = json.loads(self.ok("--json", "report").stdout)
        self.assertEqual(week["to"], today.isoformat())
        self.assertEqual(len(week["rows"]), 2)
        self.assertEqual(week["tenants"], [
            {"tenant": "contoso", "messages": 3, "recipients": 6},
            {"tenant": "fabrikam", "messages": 1, "recipients": 1}])
        month = json.loads(self.ok("--json", "report", "--days", "30", "--tenant", "contoso").stdout)
        self.assertEqual([r["messages"] for r in month["rows"]], [5, 3])
        ranged = json.loads(self.ok("--json", "report", "--from", old.isoformat(), "--to",
                                    old.isoformat(), "--account", "A",
                                    "--volume", "recipients").stdout)
        self.assertEqual(ranged["rows"], [{"day": old.isoformat(), "tenant": "contoso",
                                           "account": "a@contoso.test", "recipients": 50}])
        csv = self.ok("report", "--csv", "--volume", "messages").stdout.splitlines()
        self.assertEqual(csv[0], "day,tenant,account,messages")
        self.assertEqual(len(csv), 3)
        table = self.ok("report", "--account", "gone@fabrikam.test").stdout
        self.assertIn("gone@fabrikam.test", table)  # a removed account still reports
        self.fails(1, "--days is 7, 30 or 90", "report", "--days", "8")
        self.fails(1, "--from and --to", "report", "--from", "2026-01-01")
        self.fails(1, "dates YYYY-MM-DD", "report", "--from", "2026-02-01", "--to", "2026-01-01")
        self.fails(1, "--volume is messages or recipients", "report", "--volume", "bytes")

    def test_usage_errors(self):
        self.fails(1, "unknown command", "frobnicate")
        self.fails(1, "unknown option", "tenant", "list", "--bogus")
        self.fails(1, "needs NAME", "tenant", "show")

    def test_missing_config_is_a_failure(self):
        out = subprocess.run([CHUTECTL, "--config", "/nonexistent/c.toml", "tenant", "list"],
                             capture_output=True, text=True)
        self.assertEqual(out.returncode, 2)
        self.assertIn("/nonexistent/c.toml", out.stderr)


if __name__ == "__main__":
    unittest.main()
