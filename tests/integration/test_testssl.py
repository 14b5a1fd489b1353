"""testssl.sh against both TLS listeners: no finding rated MEDIUM or worse, apart from those
about the test's own self-signed certificate. Skipped when testssl is not installed (Debian
package testssl.sh); about a minute per port."""

import json
import os
import shutil
import subprocess
import unittest

from chute_fixture import ChutedFixture

TESTSSL = shutil.which("testssl") or shutil.which("testssl.sh")


@unittest.skipIf(TESTSSL is None, "testssl is not installed (apt-get install testssl.sh)")
class TestSslTest(ChutedFixture):
    with_tls = True

    def findings(self, port, *options):
        report = os.path.join(self.dir, f"testssl-{port}.json")
        subprocess.run([TESTSSL, "--quiet", "--color", "0", "--warnings", "batch",
                        "--jsonfile", report, *options, f"127.0.0.1:{port}"],
                       capture_output=True, timeout=600)
        with open(report) as f:
            results = json.load(f)
        return [f"{r['id']}: {r['severity']}: {r['finding']}" for r in results
                if r.get("severity") in ("MEDIUM", "HIGH", "CRITICAL")
                and not r["id"].startswith("cert")]  # the test certificate is self-signed

    def test_implicit_tls_has_no_medium_or_worse_finding(self):
        self.assertEqual(self.findings(self.smtps_port), [])

    def test_starttls_has_no_medium_or_worse_finding(self):
        self.assertEqual(self.findings(self.tls_port, "--starttls", "smtp"), [])


if __name__ == "__main__":
    unittest.main()
