"""The fault and bad-input matrix of docs/reliability.md, generated from the test run.

Tests call ``record(case_id, area, case, expected, observed)`` once their assertions passed; each row lands in
``.build/reliability/<case_id>.json``. After the e2e tests, ``python tests/e2e/reliability.py --check``
(scripts/test runs it) renders the table and fails when docs/reliability.md says something else, so the page
stays true; ``--write`` updates it. Observed messages are normalised (temporary paths, ports, digests
shortened) so that the page is the same from run to run.
"""
import argparse
import glob
import json
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ROWS = os.path.join(ROOT, ".build", "reliability")
DOC = os.path.join(ROOT, "docs", "reliability.md")
AREAS = ["options", "references", "destinations", "hostile answers", "network faults", "credentials",
         "integrity", "decompression", "without the registry"]

HEADER = """# Reliability: faults and bad input

Every row is a case the test suite runs (tests/e2e/test_trust.py and tests/e2e/test_reliability.py, against
the real registries of the test bed, the fault proxy in front of them, and an in-process registry for answers
no real registry gives), with what the collection must do and what it did in the run that generated this
page. The page is generated from the test run (`python tests/e2e/reliability.py --write` after the e2e tests);
`scripts/test` fails when it no longer matches what the tests observe. In every failure case the module ends
with a message and no traceback, leaves `dest` as it was (no partial or corrupt file), and never prints a
credential, also at `-vvv`.

"""


def _clean(text):
    text = " ".join(str(text).split())
    text = re.sub(r"/tmp/[^\s'\")]*", "/tmp/…", text)
    text = re.sub(r"(\.[\w.-]+?)\.[a-z0-9_]{8}\.tmp\b", r"\1.XXXXXXXX.tmp", text)   # mkstemp's random part
    text = re.sub(r"127\.0\.0\.\d+:\d+", "HOST:PORT", text)
    text = re.sub(r"(sha256:[0-9a-f]{12})[0-9a-f]{52}", r"\1…", text)
    text = re.sub(r"\b[0-9a-f]{64}\b", lambda m: m.group(0)[:12] + "…", text)
    text = re.sub(r"\d+(\.\d+)? seconds?", "N s", text)
    text = text.replace("|", "\\|")
    return text[:220] + ("…" if len(text) > 220 else "")


def record(case_id, area, case, expected, observed):
    """Keep one passed case for the page."""
    assert area in AREAS, area
    os.makedirs(ROWS, exist_ok=True)
    row = {"id": case_id, "area": area, "case": case, "expected": expected, "observed": _clean(observed)}
    with open(os.path.join(ROWS, re.sub(r"[^A-Za-z0-9_.-]", "_", case_id) + ".json"), "w") as handle:
        json.dump(row, handle, sort_keys=True)


def render():
    rows = []
    for path in sorted(glob.glob(os.path.join(ROWS, "*.json"))):
        with open(path) as handle:
            rows.append(json.load(handle))
    rows.sort(key=lambda r: (AREAS.index(r["area"]), r["id"]))
    out = [HEADER, "%d cases.\n" % len(rows)]
    for area in AREAS:
        mine = [r for r in rows if r["area"] == area]
        if not mine:
            continue
        out.append("\n## %s\n\n| case | expected | observed (passed) |\n|---|---|---|\n" % area.capitalize())
        for r in mine:
            out.append("| %s | %s | %s |\n" % (r["case"], r["expected"], r["observed"]))
    return "".join(out)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--write", action="store_true", help="write docs/reliability.md")
    parser.add_argument("--check", action="store_true", help="fail when docs/reliability.md differs")
    args = parser.parse_args(argv)
    text = render()
    if args.write:
        with open(DOC, "w") as handle:
            handle.write(text)
        print("wrote %s" % DOC)
        return 0
    with open(DOC) as handle:
        current = handle.read()
    if current != text:
        import difflib
        sys.stdout.writelines(difflib.unified_diff(current.splitlines(True), text.splitlines(True),
                                                   "docs/reliability.md", "generated"))
        print("\ndocs/reliability.md does not match this test run: run python tests/e2e/reliability.py --write")
        return 1
    print("docs/reliability.md matches the test run (%d cases)" % text.count("\n| "))
    return 0


if __name__ == "__main__":
    sys.exit(main())
