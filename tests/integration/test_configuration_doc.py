"""docs/configuration.md against the code: every key the loader accepts is documented in its
table's section, with the loader's range and config.h's default; every documented key is one
the loader accepts; the SIGHUP column agrees with the reload code (what it reports as needing
a restart); the example passes `chuted --check-config`.

The key list comes from the loader's source, src/base/config.cc: every key is read through
one TableReader per table (`TableReader r(table, "limits", source)`) with one call per key
(`r.Int("key", min, max, ...)`, `r.String`, `r.Bool`, `r.Enum<...>`, `r.CidrList`,
`r.PinList`), and an unread key is an error at load time, so the calls ARE the list of
accepted keys. The test checks that it found as many keys as there are reader calls and at
least one per table, so a change of that shape fails loudly rather than silently finding
nothing.
"""

import os
import re
import subprocess
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
BIN = os.environ.get("CHUTE_BIN_DIR", os.path.join(ROOT, "build", "bin"))
DOC = os.path.join(ROOT, "docs", "configuration.md")
LOADER = os.path.join(ROOT, "src", "base", "config.cc")
HEADER = os.path.join(ROOT, "src", "base", "config.h")
RELOAD = os.path.join(ROOT, "src", "server", "reload.cc")

# Keys being added to the loader in the same change as this document (issue 10): documented
# ahead of the loader. Once the loader reads them they are checked like every other key.
PENDING = set()  # keys documented ahead of the loader (none now)
SIGHUP_VALUES = {"yes", "restart", "restart (not logged)", "chutectl"}
READER_CALL = re.compile(
    r'\br\.(Int|String|StringList|Bool|CidrList|PinList|Enum<[^>]*>)\(\s*"(\w+)"(.*?)\);', re.S)


def read(path):
    with open(path) as f:
        return f.read()


def cpp_integer(text, constants=None):
    """The value of a C++ integer constant expression as config.cc writes them: 10'000'000,
    1 << 20, int64_t{1} << 40, 7 * 86400, 4 << 20, or a named constant of `constants`."""
    expr = text.strip()
    if constants and expr in constants:
        return constants[expr]
    expr = re.sub(r"int64_t\{(\d+)\}", r"\1", expr.replace("'", ""))
    if not re.fullmatch(r"[0-9 <*+()-]+", expr):
        raise ValueError(f"not a constant expression: {text!r}")
    return eval(expr, {"__builtins__": {}})  # digits and operators only, checked above


def loader_keys():
    """{(table, key): {"kind": ..., "range": (min, max) or None}} from config.cc."""
    source = read(LOADER)
    constants = {name: cpp_integer(value) for name, value in
                 re.findall(r"constexpr int64_t (k\w+) = ([^;]+);", source)}
    readers = list(re.finditer(r'TableReader r\(table, "([\w.]+)", source\);', source))
    keys = {}
    for i, reader in enumerate(readers):
        end = readers[i + 1].start() if i + 1 < len(readers) else len(source)
        body = source[reader.end():end]
        for call in READER_CALL.finditer(body):
            kind, key, rest = call.groups()
            entry = {"kind": kind.split("<")[0], "range": None}
            if kind == "Int":
                low, high = [p.strip() for p in rest.split(",")[1:3]]
                entry["range"] = (cpp_integer(low, constants), cpp_integer(high, constants))
            keys[(reader.group(1), key)] = entry
    calls = len(re.findall(r"\br\.(?:Int|String|StringList|Bool|CidrList|PinList|Enum<[^>]*>)\(",
                           source))
    return keys, calls, [r.group(1) for r in readers]


def header_int_defaults():
    """{(table, key): default} of the int64_t fields of config.h's *Config structs."""
    tables = {"Server": "server", "Listener": "listener", "Tls": "tls", "Limits": "limits",
              "Spool": "spool", "Delivery": "delivery", "Directory": "directory",
              "Passwords": "passwords", "Admin": "admin", "Log": "log", "Trace": "trace",
              "OAuth": "oauth", "Fleet": "fleet"}
    out = {}
    for struct, body in re.findall(r"struct (\w+)Config \{(.*?)\n\};", read(HEADER), re.S):
        for key, value in re.findall(r"int64_t (\w+) = ([^;]+);", body):
            if struct in tables:
                out[(tables[struct], key)] = cpp_integer(value)
    return out


def doc_keys():
    """{(table, key): {"type", "default", "range", "sighup"}} from the document's tables."""
    out = {}
    table = None
    for line in read(DOC).splitlines():
        heading = re.match(r"## `\[{1,2}([\w.]+)\]{1,2}`", line)
        if heading:
            table = heading.group(1)
            continue
        if line.startswith("## "):
            table = None
        row = re.match(r"\| `(\w+)` \|(.*)\|$", line)
        if row and table:
            cells = [c.strip() for c in row.group(2).split("|")]
            out[(table, row.group(1))] = {"type": cells[0], "default": cells[1],
                                          "range": cells[2], "sighup": cells[3],
                                          "meaning": cells[4]}
    return out


def restart_only_keys():
    """The keys the reload code reports as needing a restart (RestartOnlyChanges)."""
    source = read(RELOAD)
    start = source.index("RestartOnlyChanges(const Config& running")
    body = source[start:source.index("\n}\n", start)]
    # running.listeners.size() is the [[listener]] array, compared field by field below.
    keys = {k for k in re.findall(r"running\.(\w+)\.(\w+)", body) if k[0] != "listeners"}
    keys |= {("delivery", k) for k in re.findall(r"\bd1\.(\w+)", body)}
    listener = set(re.findall(r"\ba\.(\w+)", body)) - {"network", "prefix_bits"}
    keys |= {("listener", "bare_lf" if k == "bare_lf_normalize" else k) for k in listener}
    return keys


class ConfigurationDocTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.loader, cls.calls, cls.tables = loader_keys()
        cls.doc = doc_keys()

    def test_the_loader_was_read(self):
        self.assertEqual(len(self.loader), self.calls, "a reader call the parse did not find")
        self.assertGreater(len(self.loader), 50)
        for table in ["server", "listener", "tls", "limits", "spool", "delivery", "directory",
                      "passwords", "admin"]:
            self.assertIn(table, self.tables)

    def test_every_loader_key_is_documented(self):
        missing = sorted(set(self.loader) - set(self.doc))
        self.assertEqual(missing, [], "keys the loader accepts but docs/configuration.md lacks")

    def test_every_documented_key_is_accepted(self):
        extra = sorted(set(self.doc) - set(self.loader) - PENDING)
        self.assertEqual(extra, [], "documented keys the loader refuses")
        for key in PENDING:
            self.assertIn(key, self.doc)

    def test_ranges_and_defaults_match_the_code(self):
        defaults = header_int_defaults()
        for key, entry in self.loader.items():
            doc = self.doc[key]
            if entry["range"] is not None:
                low, high = entry["range"]
                self.assertIn(f"`{low}..{high}`", doc["range"], key)
                self.assertIn(f"`{defaults[key]}`", doc["default"], key)
            self.assertIn(doc["sighup"], SIGHUP_VALUES, key)
            self.assertTrue(doc["meaning"], key)

    def test_sighup_column_matches_the_reload_code(self):
        restart = restart_only_keys()
        self.assertIn(("server", "shards"), restart)  # the parse found the function
        self.assertIn(("delivery", "targets"), restart)
        self.assertIn(("listener", "address"), restart)
        for key in restart:
            self.assertTrue(key in self.doc, f"{key} is checked on reload but not documented")
            self.assertEqual(self.doc[key]["sighup"], "restart", key)
        for key, doc in self.doc.items():
            if doc["sighup"] == "yes":
                self.assertNotIn(key, restart, key)

    def test_example_passes_check_config(self):
        chuted = os.path.join(BIN, "chuted")
        chutectl = os.path.join(BIN, "chutectl")
        if not (os.path.exists(chuted) and os.path.exists(chutectl)):
            self.skipTest(f"no chuted in {BIN}")
        example = re.search(r"## Example.*?```toml\n(.*?)```", read(DOC), re.S).group(1)
        for table, key in PENDING:
            if (table, key) not in self.loader:  # not accepted yet: leave its table out
                example = re.sub(rf"\n\[{table}\]\n(?:[^\[\n].*\n)*", "\n", example)
        with tempfile.TemporaryDirectory(prefix="chute-doc-") as tmp:
            from chute_fixture import make_certificate
            cert, key = make_certificate(tmp)
            example = (example.replace("/etc/chute/tls/cert.pem", cert)
                       .replace("/etc/chute/tls/key.pem", key)
                       .replace("/var/lib/chute", tmp))
            config = os.path.join(tmp, "chute.toml")
            with open(config, "w") as f:
                f.write(example)
            for args in (["tenant", "add", "corp", "--domain", "corp.example"],
                         ["account", "new", "--tenant", "corp", "--name", "Printers",
                          "--primary-smtp-address", "printers@corp.example", "--no-password"]):
                subprocess.run([chutectl, "--config", config, *args], check=True,
                               capture_output=True, timeout=60)
            result = subprocess.run([chuted, "--config", config, "--check-config"],
                                    capture_output=True, text=True, timeout=60)
            self.assertEqual(result.returncode, 0, result.stderr)
            self.assertIn("OK", result.stdout)


if __name__ == "__main__":
    unittest.main()
