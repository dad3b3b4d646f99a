"""The fleet benchmark (benchmarks/fleet.py) in its smallest mode, so that it cannot rot.

Timings are not asserted (they belong to the benchmark, not to tests): only that one run produced every row,
and the byte counts that do not depend on the machine.
"""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CASES = ["(a) direct", "(b) relay", "(b') relay, pipelining", "(c) kubespray", "(c') kubespray, no -C",
         "(d) ssh cat"]
IMAGES = ["image 1", "image 2 (shares 4 layers)"]


def test_fleet_benchmark_smoke(tmp_path):
    report = tmp_path / "fleet.md"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "fleet.py"), "--smoke",
                           "--output", str(report)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          timeout=1800, check=False)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-5000:]
    text = report.read_text()
    assert text == proc.stdout.decode().strip() + "\n"
    rows = [[c.strip() for c in line.split("|")[1:-1]] for line in text.splitlines() if line.startswith("| 2 |")]
    seen = set((row[1], row[2]) for row in rows)
    assert seen == set((case, image) for case in CASES for image in IMAGES), sorted(seen)
    for row in rows:
        assert float(row[3]) > 0, row
    # machine-independent: the relay's registry and host bytes
    assert "- (b) registry bytes = one copy of each blob, whatever N: met" in text
    assert "- (b) second image: only its new blobs reach each host" in text and text.count(": met") >= 2
    raw = json.loads((tmp_path / "fleet.json").read_text())
    assert raw["profile"] == "smoke" and raw["fleets"] == [2] and len(raw["rows"]) == len(rows)
